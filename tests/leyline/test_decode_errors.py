"""Decoding refuses bad messages with one error type, a reason and, where known, the field."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

import msgspec
import pytest

import leyline.registry
import leyline.wire
from leyline import (
    AdaptationCommand,
    CommandType,
    ContractError,
    FastTrainingSignals,
    RejectReason,
    SeedTelemetry,
    TelemetryEvent,
    TelemetryEventType,
    TrainingMetrics,
    TrainingSignals,
    new_id,
)
from leyline.registry import Registry, Upgrade
from leyline.telemetry import PlateauDetected, SeedGerminated

NAN, INF = math.nan, math.inf


def as_wire(message: msgspec.Struct) -> Any:
    """The message as plain values (datetimes kept), ready to be spoiled and re-encoded."""
    return msgspec.to_builtins(message, builtin_types=(datetime,))


def refusal(value: Any) -> ContractError:
    with pytest.raises(ContractError) as caught:
        leyline.wire.decode(msgspec.msgpack.encode(value))
    return caught.value


def command(**fields: Any) -> dict[str, Any]:
    base = AdaptationCommand(
        command_id=new_id(), command_type=CommandType.SET_ALPHA, target_slot_id="s", alpha_value=0.5
    )
    wire: dict[str, Any] = as_wire(base)
    return {**wire, **fields}


@pytest.mark.parametrize(
    ("fields", "path"),
    [
        ({"alpha_value": 1.5}, "$.alpha_value"),
        ({"alpha_value": -0.01}, "$.alpha_value"),
        ({"alpha_value": NAN}, "$.alpha_value"),
        ({"alpha_value": INF}, "$.alpha_value"),
        ({"confidence": 1.0001}, "$.confidence"),
        ({"confidence": -INF}, "$.confidence"),
        ({"confidence": NAN}, "$.confidence"),
        ({"command_type": 5, "learning_rate": 0.0}, "$.learning_rate"),
        ({"command_type": 5, "learning_rate": -1e-3}, "$.learning_rate"),
        ({"command_type": 5, "learning_rate": INF}, "$.learning_rate"),
        ({"command_type": 5, "learning_rate": 10.5}, "$.learning_rate"),
        ({"command_id": ""}, "$.command_id"),
        ({"command_id": "x" * 129}, "$.command_id"),
        ({"command_type": 99}, "$.command_type"),
        ({"target_stage": 11}, "$.target_stage"),
        ({"reason": "x" * 65}, "$.reason"),
        ({"confidence": "high"}, "$.confidence"),
    ],
)
def test_command_values_out_of_contract_are_refused_with_their_path(
    fields: dict[str, Any], path: str
) -> None:
    error = refusal(command(**fields))
    assert error.reason is RejectReason.INVALID_VALUE
    assert error.path == path
    assert "AdaptationCommand.v2" in str(error)


@pytest.mark.parametrize(
    ("fields", "detail"),
    [
        ({"command_type": 1, "blueprint_id": None}, "GERMINATE needs a blueprint_id"),
        ({"command_type": 1, "blueprint_id": ""}, "GERMINATE needs a blueprint_id"),
        ({"command_type": 4, "alpha_value": None}, "SET_ALPHA needs an alpha_value"),
        ({"command_type": 5}, "SET_LEARNING_RATE needs a learning_rate"),
        ({"target_slot_id": None}, "needs a target_seed_id or target_slot_id"),
    ],
)
def test_command_cross_field_rules_are_checked_at_decode(
    fields: dict[str, Any], detail: str
) -> None:
    error = refusal(command(**fields))
    assert error.reason is RejectReason.INVALID_VALUE
    assert detail in error.detail


@pytest.mark.parametrize(
    ("index", "value"),
    [
        (3, NAN),
        (3, INF),
        (3, -1.0),
        (5, -INF),
        (5, NAN),
        (7, 100.5),
        (11, NAN),
        (17, 1.5),
        (18, 100.5),
    ],
)
def test_fast_signal_non_finite_or_out_of_range_is_refused_at_its_index(
    index: int, value: float
) -> None:
    wire = as_wire(FastTrainingSignals.empty().named())  # v1, still read and checked
    wire[index] = value
    error = refusal(wire)
    assert error.reason is RejectReason.INVALID_VALUE
    assert error.path == f"$[{index}]"


def test_fast_signal_history_entry_is_located_inside_the_tuple() -> None:
    wire = as_wire(FastTrainingSignals.empty().named())  # v1, still read and checked
    wire[12] = [0.0, 0.0, INF, 0.0, 0.0]
    assert refusal(wire).path == "$[12][2]"


def test_nested_field_path_reaches_into_the_inner_struct() -> None:
    wire = as_wire(TrainingSignals(metrics=TrainingMetrics()))
    wire["metrics"]["train_loss"] = INF
    error = refusal(wire)
    assert error.reason is RejectReason.INVALID_VALUE
    assert error.path == "$.metrics.train_loss"


@pytest.mark.parametrize(
    ("field", "value"),
    [("gradient_health", 1.5), ("alpha", -0.5), ("accuracy", 100.1), ("gradient_norm", NAN)],
)
def test_seed_telemetry_out_of_range_is_refused(field: str, value: float) -> None:
    wire = as_wire(SeedTelemetry(seed_id="seed_1"))
    wire[field] = value
    error = refusal(wire)
    assert (error.reason, error.path) == (RejectReason.INVALID_VALUE, f"$.{field}")


def test_telemetry_payload_must_match_the_event_type() -> None:
    event = TelemetryEvent(
        event_type=TelemetryEventType.PLATEAU_DETECTED, payload=PlateauDetected(plateau_epochs=3)
    )
    wire = as_wire(event)
    wire["event_type"] = int(TelemetryEventType.SEED_GERMINATED)
    error = refusal(wire)
    assert error.reason is RejectReason.INVALID_VALUE
    assert "SeedGerminated" in error.detail and "PlateauDetected" in error.detail


def test_telemetry_event_cannot_be_built_with_the_wrong_payload() -> None:
    with pytest.raises(ValueError, match="SEED_CULLED carries SeedCulled"):
        TelemetryEvent(
            event_type=TelemetryEventType.SEED_CULLED,
            payload=SeedGerminated(seed_id="s", blueprint_id="norm", params=10),
        )


def test_missing_required_field_is_refused_by_name_and_path() -> None:
    wire = as_wire(SeedTelemetry(seed_id="seed_1"))
    del wire["seed_id"]
    error = refusal(wire)
    assert (error.reason, error.path) == (RejectReason.INVALID_VALUE, "$.seed_id")
    assert "seed_id" in error.detail


def test_a_missing_field_of_a_nested_struct_is_refused_at_its_path() -> None:
    wire = as_wire(
        TelemetryEvent(
            event_type=TelemetryEventType.SEED_GERMINATED,
            payload=SeedGerminated(seed_id="s", blueprint_id="norm", params=10),
        )
    )
    del wire["payload"]["blueprint_id"]
    error = refusal(wire)
    assert (error.reason, error.path) == (RejectReason.INVALID_VALUE, "$.payload.blueprint_id")


@pytest.mark.parametrize(
    "value",
    [
        {"type": "Nope.v1", "a": 1},
        {"type": "not a tag"},
        {"type": 7},
        {"no_tag": 1},
        ["Nope.v1", 1, 2],
        [1, 2, 3],
        "AdaptationCommand.v1",
        42,
        None,
    ],
)
def test_unknown_or_missing_tag_is_refused(value: Any) -> None:
    assert refusal(value).reason is RejectReason.UNKNOWN_TAG


@pytest.mark.parametrize(
    "value",
    [
        {"type": "AdaptationCommand.v3", "command_type": 1},
        {"type": "SeedTelemetry.v0"},
        ["FastTrainingSignals.v9", 1, 2],
    ],
)
def test_a_major_this_reader_does_not_know_is_unsupported(value: Any) -> None:
    error = refusal(value)
    assert error.reason is RejectReason.UNSUPPORTED_VERSION
    assert "reads v1" in error.detail


def test_empty_truncated_and_oversized_payloads_are_refused() -> None:
    good = leyline.wire.encode(SeedTelemetry(seed_id="seed_1"))
    cases = {b"": RejectReason.MALFORMED, good[:-3]: RejectReason.MALFORMED}
    cases[b"\xc0" * 70_000] = RejectReason.OVERSIZE
    for data, reason in cases.items():
        with pytest.raises(ContractError) as caught:
            leyline.wire.decode(data)
        assert caught.value.reason is reason


class PingV1(msgspec.Struct, frozen=True, tag="Ping.v1"):
    count: int


class Ping(msgspec.Struct, frozen=True, tag="Ping.v2"):
    total: int
    unit: str = "items"


class Pong(msgspec.Struct, frozen=True, array_like=True, tag="Pong.v1"):
    value: float


def local_registry() -> Registry:
    registry = Registry()
    registry.register(Ping, upgrades=[Upgrade(PingV1, lambda old: Ping(total=old.count))])
    registry.register(Pong, budget=64)
    return registry


def test_an_older_major_is_lifted_to_the_current_type() -> None:
    decoded = local_registry().decoder().decode(msgspec.msgpack.encode(PingV1(count=3)))
    assert decoded == Ping(total=3)


def test_the_current_major_decodes_as_itself() -> None:
    registry = local_registry()
    data = registry.encoder().encode(Ping(total=5, unit="kg"))
    assert registry.decoder().decode(data) == Ping(total=5, unit="kg")


def test_a_newer_major_than_any_registered_is_unsupported() -> None:
    with pytest.raises(ContractError) as caught:
        local_registry().decoder().decode(msgspec.msgpack.encode({"type": "Ping.v3", "total": 1}))
    assert caught.value.reason is RejectReason.UNSUPPORTED_VERSION
    assert "reads v1, v2" in caught.value.detail


def test_a_registered_type_outside_the_accepted_set_is_refused() -> None:
    decoder = local_registry().decoder(accept=[Pong])
    assert decoder.decode(msgspec.msgpack.encode(Pong(1.5))) == Pong(1.5)
    with pytest.raises(ContractError) as caught:
        decoder.decode(msgspec.msgpack.encode(Ping(total=1)))
    assert caught.value.reason is RejectReason.UNKNOWN_TAG


def test_the_encoder_refuses_a_legacy_or_unregistered_type() -> None:
    with pytest.raises(TypeError, match="PingV1"):
        local_registry().encoder().encode(PingV1(count=1))


def test_a_tag_with_trailing_text_is_not_a_versioned_tag() -> None:
    with pytest.raises(ValueError, match="not a versioned tag"):
        leyline.registry.parse_tag("Ping.v1\n")


def test_registering_a_tag_twice_is_refused() -> None:
    registry = local_registry()
    with pytest.raises(ValueError, match="already registered"):
        registry.register(Pong)
