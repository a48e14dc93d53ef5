"""FastTrainingSignals v2: a tensor-ready feature block, checked a whole batch at a time.

A bad row is refused by name (`invalid_value`, the feature's index in the path), counted,
and the rest of the batch is converted in order.
"""

from __future__ import annotations

import math
import struct

import msgspec
import numpy as np
import pytest
import torch
from contract_strategies import for_struct
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import leyline.wire
from leyline import ContractError, FastTrainingSignals, RejectReason, SeedStage
from leyline.features import RowChecker, feature_ranges, refusal
from leyline.signals import FEATURE_BLOCK, TENSOR_SCHEMA_SIZE, FastTrainingSignalsV1, TensorSchema
from leyline.tensors import BatchConverter, to_tensor

F = TensorSchema
GOOD = FastTrainingSignals.empty().with_values(epoch=7, val_accuracy=55.5, val_loss=1.25)


def spoiled(
    signal: FastTrainingSignals, feature: TensorSchema, value: float
) -> FastTrainingSignals:
    """`signal` with one value of its block overwritten, as a careless or hostile peer might."""
    block = bytearray(signal.features)
    struct.pack_into("<f", block, 4 * feature, value)
    return FastTrainingSignals(signal.epoch, bytes(block), signal.slot_index)


@pytest.mark.parametrize(
    ("feature", "value", "why"),
    [
        (F.TRAIN_LOSS, math.nan, "is not in"),
        (F.VAL_LOSS, math.inf, "is not in"),
        (F.LOSS_DELTA, -math.inf, "is not in"),
        (F.VAL_ACCURACY, 100.5, "is not in"),
        (F.ACCURACY_DELTA, -100.5, "is not in"),
        (F.LOSS_HIST_2, -1.0, "is not in"),
        (F.SEED_ALPHA, 1.5, "is not in"),
        (F.SEED_STAGE, 11.0, "is not in"),
        (F.SEED_STAGE, 2.5, "is not an integer"),
        (F.EPOCH, 3.25, "is not an integer"),
        (F.HAS_ACTIVE_SEED, 2.0, "is not in"),
        (F.AVAILABLE_SLOTS, -0.0, "is -0.0"),
    ],
)
def test_a_bad_row_among_good_ones_is_refused_by_name_and_the_rest_go_on_in_order(
    feature: TensorSchema, value: float, why: str
) -> None:
    converter = BatchConverter(8, device="cpu")
    good = [GOOD.with_values(epoch=n + 1) for n in range(4)]
    batch = [good[0], good[1], spoiled(GOOD, feature, value), good[2], good[3]]

    tensor = converter.convert(batch)

    assert torch.equal(tensor, torch.stack([to_tensor(s, "cpu") for s in good]))
    [(index, error)] = converter.refused
    assert index == 2
    assert error.reason is RejectReason.INVALID_VALUE
    assert error.path == f"$.features[{int(feature)}]"
    assert feature.name.lower() in error.detail and why in error.detail
    assert converter.refused_total == 1


def test_refusals_are_counted_across_calls_and_cleared_per_call() -> None:
    converter = BatchConverter(4, device="cpu")
    nan = spoiled(GOOD, F.VAL_LOSS, math.nan)

    assert converter.convert([nan, nan, GOOD]).shape == (1, TENSOR_SCHEMA_SIZE)
    assert [i for i, _ in converter.refused] == [0, 1]
    assert converter.convert([GOOD]).shape == (1, TENSOR_SCHEMA_SIZE)
    assert converter.refused == []
    assert converter.convert([nan]).shape == (0, TENSOR_SCHEMA_SIZE)
    assert converter.refused_total == 3


def test_values_at_the_edges_of_their_ranges_pass() -> None:
    top = float(np.finfo(np.float32).max)
    edges = GOOD.with_values(
        val_accuracy=100.0,
        train_accuracy=0.0,
        accuracy_delta=-100.0,
        seed_improvement=100.0,
        loss_delta=-top,
        train_loss=top,
        seed_alpha=1.0,
        seed_stage=SeedStage.RESETTING,
        epoch=2**32 - 1,
        has_active_seed=1,
    )
    converter = BatchConverter(2, device="cpu")

    assert converter.convert([edges]).shape == (1, TENSOR_SCHEMA_SIZE)
    assert converter.refused == []


def test_one_signal_with_a_bad_value_raises_its_refusal() -> None:
    with pytest.raises(ContractError, match=r"val_loss = nan .*features\[3\]"):
        to_tensor(spoiled(GOOD, F.VAL_LOSS, math.nan), "cpu")


any_float32 = st.floats(width=32, allow_nan=True, allow_infinity=True, allow_subnormal=True)
edgy = st.sampled_from([0.0, -0.0, 1.0, 100.0, 10.0, 2.0**32, 0.5, -1.0, math.nan, math.inf])


@settings(max_examples=300, deadline=None)
@given(
    st.integers(1, 6).flatmap(
        lambda rows: arrays(np.float32, (rows, TENSOR_SCHEMA_SIZE), elements=any_float32 | edgy)
    )
)
def test_the_batch_check_flags_exactly_the_rows_the_one_row_rules_refuse(rows: np.ndarray) -> None:
    flagged = RowChecker(8).bad_rows(np.ascontiguousarray(rows)).tolist()

    assert flagged == [i for i, row in enumerate(rows.tolist()) if refusal(row) is not None]


@settings(max_examples=150, deadline=None)
@given(for_struct(FastTrainingSignalsV1))
def test_a_v1_signal_is_lifted_to_the_v2_block_of_the_same_values(
    old: FastTrainingSignalsV1,
) -> None:
    lifted = leyline.wire.decode(msgspec.msgpack.encode(old))

    assert isinstance(lifted, FastTrainingSignals)
    assert (lifted.epoch, lifted.slot_index) == (old.epoch, old.slot_index)
    expected = np.array(old.to_vector(), np.float64).clip(
        -3.4028234663852886e38, 3.4028234663852886e38
    )
    assert lifted.to_vector() == expected.astype(np.float32).tolist()
    assert refusal(lifted.to_vector()) is None


def test_a_block_of_the_wrong_length_is_refused_at_decode() -> None:
    payload = msgspec.msgpack.encode(["FastTrainingSignals.v2", 1, b"\x00" * 104, 0])

    with pytest.raises(ContractError) as caught:
        leyline.wire.decode(payload)

    assert caught.value.reason is RejectReason.INVALID_VALUE
    assert caught.value.path == "$[2]"


def test_the_block_is_the_schema_order_as_little_endian_float32() -> None:
    signal = GOOD.with_values(global_step=300, seed_stage=SeedStage.BLENDING)

    values = struct.unpack("<27f", signal.features)

    assert FEATURE_BLOCK.size == 108 == len(signal.features)
    assert values[F.EPOCH] == signal.epoch == 7
    assert values[F.GLOBAL_STEP] == 300.0
    assert values[F.SEED_STAGE] == SeedStage.BLENDING
    assert signal.named().seed_stage is SeedStage.BLENDING


def test_every_feature_has_one_range_in_schema_order() -> None:
    assert [r.feature for r in feature_ranges()] == list(TensorSchema)
