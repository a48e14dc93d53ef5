"""Normalisation keeps every feature in its declared range, whatever the raw values."""

from __future__ import annotations

import math
from pathlib import Path

import msgspec
import numpy as np
import pytest
from contract_strategies import for_struct
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from leyline import FastTrainingSignals, SeedStage
from leyline.features import (
    DEFAULT_BOUNDS,
    FeatureBounds,
    feature_transforms,
    features_markdown,
    normalise_into,
    write_raw,
)
from leyline.signals import TENSOR_SCHEMA_SIZE, TensorSchema

DOCS = Path(__file__).resolve().parents[2] / "docs" / "features.md"
TRANSFORMS = feature_transforms()
LOW = np.array([t.low for t in TRANSFORMS], np.float32)
HIGH = np.array([t.high for t in TRANSFORMS], np.float32)
NAN = np.array([t.nan_value for t in TRANSFORMS], np.float32)

any_float32 = st.floats(width=32, allow_nan=True, allow_infinity=True, allow_subnormal=True)
raw_batches = st.integers(1, 8).flatmap(
    lambda rows: arrays(np.float32, (rows, TENSOR_SCHEMA_SIZE), elements=any_float32)
)


def normalised(raw: np.ndarray, bounds: FeatureBounds = DEFAULT_BOUNDS) -> np.ndarray:
    out = np.empty_like(raw)
    return normalise_into(raw, out, bounds)


def signals(**changes: object) -> FastTrainingSignals:
    return FastTrainingSignals.empty().with_values(**changes)


def test_every_schema_feature_has_one_transform_in_schema_order() -> None:
    assert [t.feature for t in TRANSFORMS] == list(TensorSchema)


@settings(max_examples=200, deadline=None)
@given(raw_batches)
def test_normalised_features_stay_in_their_declared_range(raw: np.ndarray) -> None:
    out = normalised(raw)

    assert not np.isnan(out).any()
    assert (out >= LOW).all()
    assert (out <= HIGH).all()


@settings(max_examples=100, deadline=None)
@given(raw_batches)
def test_normalising_in_place_equals_normalising_into_another_array(raw: np.ndarray) -> None:
    expected = normalised(raw)

    normalise_into(raw, raw)

    np.testing.assert_array_equal(raw, expected)


def test_nan_becomes_each_features_neutral_value() -> None:
    raw = np.full((2, TENSOR_SCHEMA_SIZE), np.nan, np.float32)

    out = normalised(raw)

    np.testing.assert_array_equal(out, np.stack([NAN, NAN]))
    assert out[0, TensorSchema.VAL_LOSS] == 1.0  # an unknown loss counts as the worst
    assert out[0, TensorSchema.LOSS_DELTA] == 0.0  # an unknown change counts as none


def test_positive_infinity_becomes_the_upper_bound_and_negative_the_lower() -> None:
    raw = np.array([[np.inf] * TENSOR_SCHEMA_SIZE, [-np.inf] * TENSOR_SCHEMA_SIZE], np.float32)

    out = normalised(raw)

    np.testing.assert_array_equal(out[0], HIGH)
    np.testing.assert_array_equal(out[1], LOW)


def test_declared_bounds_scale_the_unbounded_features() -> None:
    raw = np.zeros((1, TENSOR_SCHEMA_SIZE), np.float32)
    raw[0, TensorSchema.EPOCH] = 5
    raw[0, TensorSchema.GLOBAL_STEP] = 20_000
    raw[0, TensorSchema.VAL_LOSS] = 2.5
    raw[0, TensorSchema.TRAIN_LOSS] = 1e30
    raw[0, TensorSchema.VAL_ACCURACY] = 55.0
    raw[0, TensorSchema.ACCURACY_DELTA] = -25.0
    raw[0, TensorSchema.PLATEAU_EPOCHS] = 3
    raw[0, TensorSchema.SEED_STAGE] = SeedStage.RESETTING
    raw[0, TensorSchema.SEED_IMPROVEMENT] = 2.5

    out = normalised(raw)[0]

    assert out[TensorSchema.EPOCH] == np.float32(5 / 25)
    assert out[TensorSchema.GLOBAL_STEP] == 1.0
    assert out[TensorSchema.VAL_LOSS] == 0.25
    assert out[TensorSchema.TRAIN_LOSS] == 1.0
    assert out[TensorSchema.VAL_ACCURACY] == np.float32(0.55)
    assert out[TensorSchema.ACCURACY_DELTA] == -1.0
    assert out[TensorSchema.PLATEAU_EPOCHS] == np.float32(0.3)
    assert out[TensorSchema.SEED_STAGE] == 1.0
    assert out[TensorSchema.SEED_IMPROVEMENT] == 0.25


def test_other_bounds_give_other_scales() -> None:
    raw = np.zeros((1, TENSOR_SCHEMA_SIZE), np.float32)
    raw[0, TensorSchema.EPOCH] = 50

    assert normalised(raw)[0, TensorSchema.EPOCH] == 1.0
    long_runs = FeatureBounds(max_epochs=100)
    assert normalised(raw, long_runs)[0, TensorSchema.EPOCH] == 0.5


@pytest.mark.parametrize("value", [0, -1, math.inf, math.nan])
def test_bounds_refuse_a_scale_that_is_not_positive_and_finite(value: float) -> None:
    with pytest.raises(ValueError, match="loss_cap must be positive and finite"):
        FeatureBounds(loss_cap=value)


def test_bounds_from_config_data_name_the_invalid_field() -> None:
    with pytest.raises(msgspec.ValidationError, match="max_steps must be positive"):
        msgspec.convert({"max_steps": 0}, FeatureBounds)


def test_normalise_refuses_arrays_of_the_wrong_shape() -> None:
    with pytest.raises(ValueError, match=r"\[B, 27\]"):
        normalise_into(np.zeros((2, 26), np.float32), np.zeros((2, 26), np.float32))


@settings(max_examples=150, deadline=None)
@given(st.lists(for_struct(FastTrainingSignals), max_size=6))
def test_raw_rows_are_each_signals_vector_as_float32(batch: list[FastTrainingSignals]) -> None:
    out = np.full((8, TENSOR_SCHEMA_SIZE), -7.0, np.float32)

    with np.errstate(over="ignore"):
        expected = np.array([s.to_vector() for s in batch], np.float32).reshape(-1, 27)
    rows = write_raw(batch, out)

    np.testing.assert_array_equal(rows, expected)
    assert (out[len(batch) :] == -7.0).all()


@settings(max_examples=150, deadline=None)
@given(st.lists(for_struct(FastTrainingSignals), max_size=6))
def test_float64_raw_rows_hold_each_signals_vector_exactly(
    batch: list[FastTrainingSignals],
) -> None:
    out = np.full((8, TENSOR_SCHEMA_SIZE), -7.0, np.float64)

    rows = write_raw(batch, out)

    assert rows.tolist() == [s.to_vector() for s in batch]
    assert (out[len(batch) :] == -7.0).all()


def test_raw_values_beyond_float32_are_packed_as_its_bounds_that_normalise_to_bounds() -> None:
    huge = signals(train_loss=1e300, loss_delta=-1e300)
    out = np.zeros((1, TENSOR_SCHEMA_SIZE), np.float32)

    rows = write_raw([huge], out)

    top = np.finfo(np.float32).max
    assert rows[0, TensorSchema.TRAIN_LOSS] == top
    assert rows[0, TensorSchema.LOSS_DELTA] == -top
    normalise_into(rows, rows)
    assert rows[0, TensorSchema.TRAIN_LOSS] == 1.0
    assert rows[0, TensorSchema.LOSS_DELTA] == -1.0


def test_write_raw_refuses_more_signals_than_rows() -> None:
    with pytest.raises(ValueError, match="3 signals do not fit in 2 rows"):
        write_raw([FastTrainingSignals.empty()] * 3, np.zeros((2, 27), np.float32))


@pytest.mark.parametrize(
    "out",
    [
        np.zeros((2, 27), np.float16),
        np.zeros((2, 54), np.float32)[:, ::2],
        np.zeros(27, np.float32),
    ],
    ids=["float16", "strided", "one-dimensional"],
)
def test_write_raw_refuses_an_array_it_cannot_pack_into(out: np.ndarray) -> None:
    with pytest.raises(ValueError):
        write_raw([FastTrainingSignals.empty()], out)


def test_committed_feature_docs_match_the_transform_table() -> None:
    assert DOCS.read_text(encoding="utf-8") == features_markdown()
