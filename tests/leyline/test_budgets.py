"""Size budgets enforced at encode, and the fast-tier conversions that keep values in range."""

from __future__ import annotations

import math

import msgspec
import pytest
from contract_strategies import for_struct
from hypothesis import given, settings
from hypothesis import strategies as st

import leyline.signals
import leyline.wire
from leyline import (
    AdaptationCommand,
    BudgetError,
    FastTrainingSignals,
    RejectReason,
    SeedStage,
    SeedTelemetry,
    TrainingMetrics,
    TrainingSignals,
    new_id,
)
from leyline.budgets import DEFAULT_BUDGETS
from leyline.features import refusal
from leyline.wire import REGISTRY

MAX_COUNT = 2**32 - 1


def worst_case_fast_signals() -> FastTrainingSignals:
    """Every integer at its maximum, every float at an extreme (the block is 108 bytes whatever
    its values; the integers outside it take their longest msgpack form)."""
    big = 1.7976931348623157e308
    hist = (big, big, big, big, big)
    pct = (99.99, 99.99, 99.99, 99.99, 99.99)
    return FastTrainingSignals.of(
        MAX_COUNT, MAX_COUNT, big, big, -big, 99.99, 99.99, -99.99, MAX_COUNT, 99.99, big,
        hist, pct, 1, SeedStage.RESETTING, MAX_COUNT, 0.33, -99.99, MAX_COUNT, MAX_COUNT,
    )  # fmt: skip


def test_spec_budgets_are_declared_once() -> None:
    assert DEFAULT_BUDGETS.max_message_size_bytes == 280
    assert DEFAULT_BUDGETS.serialization_budget_us == 80.0
    assert REGISTRY.entry(FastTrainingSignals).budget == 280


def test_fast_signals_worst_case_fits_the_280_byte_budget() -> None:
    encoded = leyline.wire.encode(worst_case_fast_signals())
    assert len(encoded) <= 280
    assert leyline.wire.decode(encoded) == worst_case_fast_signals()


@settings(max_examples=150, deadline=None)
@given(signals=for_struct(FastTrainingSignals))
def test_every_valid_fast_signal_fits_its_budget(signals: FastTrainingSignals) -> None:
    assert len(leyline.wire.encode(signals)) <= 280


def test_an_oversized_message_is_refused_at_encode() -> None:
    command = AdaptationCommand(
        command_id=new_id(),
        target_slot_id="s",
        blueprint_id="norm",
        annotations={f"k{i}": "v" * 120 for i in range(8)},
    )
    size = len(msgspec.msgpack.encode(command))
    with pytest.raises(BudgetError) as caught:
        leyline.wire.encode(command)
    error = caught.value
    assert error.reason is RejectReason.OVER_BUDGET
    assert (error.size, error.budget) == (size, DEFAULT_BUDGETS.max_command_size_bytes)
    assert "AdaptationCommand.v2" in str(error)


def test_encode_into_checks_the_budget_too() -> None:
    encoder = REGISTRY.encoder()
    buffer = bytearray(b"head")
    size = encoder.encode_into(worst_case_fast_signals(), buffer, 4)
    assert size == len(buffer) - 4 <= 280
    command = AdaptationCommand(
        command_id=new_id(),
        target_slot_id="s",
        blueprint_id="norm",
        annotations={f"k{i}": "v" * 120 for i in range(8)},
    )
    with pytest.raises(BudgetError):
        encoder.encode_into(command, bytearray(), 0)


def signals(**metrics: float) -> TrainingSignals:
    return TrainingSignals(metrics=TrainingMetrics(**metrics))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("best", "expected"),
    [(0.5, 0.5), (10.0, 10.0), (25.0, 10.0), (math.inf, 10.0), (math.nan, 10.0)],
)
def test_to_fast_caps_best_val_loss_at_10(best: float, expected: float) -> None:
    assert signals(best_val_loss=best).to_fast().named().best_val_loss == expected


@pytest.mark.parametrize(
    ("delta", "expected"), [(math.inf, 0.0), (-math.inf, 0.0), (math.nan, 0.0), (-0.25, -0.25)]
)
def test_to_fast_replaces_a_non_finite_loss_delta_with_zero(delta: float, expected: float) -> None:
    assert signals(loss_delta=delta).to_fast().named().loss_delta == expected


@pytest.mark.parametrize(
    ("history", "expected"),
    [
        ([], (0.0, 0.0, 0.0, 0.0, 0.0)),
        ([7.0], (0.0, 0.0, 0.0, 0.0, 7.0)),
        ([1.0, 2.0, 3.0], (0.0, 0.0, 1.0, 2.0, 3.0)),
        ([1.0, 2.0, 3.0, 4.0, 5.0], (1.0, 2.0, 3.0, 4.0, 5.0)),
        ([9.0, 8.0, 1.0, 2.0, 3.0, 4.0, 5.0], (1.0, 2.0, 3.0, 4.0, 5.0)),
    ],
)
def test_to_fast_keeps_the_last_five_with_the_newest_at_index_4(
    history: list[float], expected: tuple[float, ...]
) -> None:
    fast = TrainingSignals(loss_history=history, accuracy_history=history).to_fast().named()
    assert fast.loss_history_5 == expected
    assert fast.accuracy_history_5 == expected


def test_to_fast_seed_arguments_override_the_stored_fields() -> None:
    stored = TrainingSignals(
        active_seeds=["seed_1"],
        seed_stage=SeedStage.TRAINING,
        seed_epochs_in_stage=2,
        seed_alpha=0.0,
        seed_improvement=1.0,
        available_slots=1,
    )
    assert stored.to_fast().named().seed_stage is SeedStage.TRAINING
    fast = stored.to_fast(SeedStage.BLENDING, 4, 0.5, -2.0, slot_index=1).named()
    assert fast.has_active_seed == 1
    assert (fast.seed_stage, fast.seed_epochs_in_stage) == (SeedStage.BLENDING, 4)
    assert (fast.seed_alpha, fast.seed_improvement, fast.slot_index) == (0.5, -2.0, 1)
    assert TrainingSignals().to_fast().named().has_active_seed == 0


@settings(max_examples=150, deadline=None)
@given(
    observation=for_struct(TrainingSignals),
    best=st.floats(min_value=0.0) | st.just(math.nan),
    delta=st.floats(),
)
def test_to_fast_of_any_observation_is_valid_on_the_wire(
    observation: TrainingSignals, best: float, delta: float
) -> None:
    metrics = msgspec.structs.replace(observation.metrics, best_val_loss=best, loss_delta=delta)
    observation = msgspec.structs.replace(observation, metrics=metrics)
    fast = observation.to_fast()
    assert leyline.wire.decode(leyline.wire.encode(fast)) == fast
    assert len(fast.to_vector()) == leyline.signals.TENSOR_SCHEMA_SIZE
    assert refusal(fast.to_vector()) is None  # every value in its feature's range


def test_empty_fast_signals_are_zero_with_one_free_slot_and_capped_best_loss() -> None:
    vector = FastTrainingSignals.empty().to_vector()
    assert vector[leyline.signals.TensorSchema.BEST_VAL_LOSS] == 10.0
    assert vector[leyline.signals.TensorSchema.AVAILABLE_SLOTS] == 1.0
    others = [v for i, v in enumerate(vector) if i not in (10, 26)]
    assert others == [0.0] * 25


@settings(max_examples=150, deadline=None)
@given(telemetry=for_struct(SeedTelemetry))
def test_seed_telemetry_features_are_bounded(telemetry: SeedTelemetry) -> None:
    features = telemetry.to_features()
    assert len(features) == SeedTelemetry.feature_dim() == 10
    assert all(math.isfinite(f) for f in features)
    accuracy_delta = features.pop(6)
    assert -1.0 <= accuracy_delta <= 1.0
    assert all(0.0 <= f <= 1.0 for f in features), features


def test_seed_telemetry_features_follow_the_spec_formulas() -> None:
    telemetry = SeedTelemetry(
        seed_id="s",
        gradient_norm=25.0,
        gradient_health=0.7,
        has_vanishing=True,
        epochs_in_stage=10,
        accuracy=64.0,
        accuracy_delta=-3.0,
        stage=SeedStage.BLENDING,
        alpha=0.4,
        epoch=5,
        max_epochs=25,
    )
    assert telemetry.to_features() == pytest.approx(
        [1.0, 0.7, 1.0, 0.0, 0.2, 0.64, -0.3, 0.5, 0.4, 0.2]
    )
