"""The compiled kernels against the numpy passes they replaced (kept here only as oracles).

Random batches of good and bad rows (every kind of bad value, any float32 bit pattern), wide
enough for whole spans and a tail, and random drains of good and bad records: the kernels'
accepted rows, values and named refusals are exactly the numpy implementation's.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from leyline import FastTrainingSignals, kernels
from leyline.features import (
    _LIMIT,
    _MASK,
    _WHOLE,
    FeatureNormaliser,
    RowChecker,
    feature_transforms,
    refusal,
)
from leyline.records import (
    EPOCH_AT,
    FEATURES_AT,
    RECORD_BYTES,
    SLOT_AT,
    TEMPLATE,
    template_words,
)
from leyline.signals import FEATURE_BLOCK, TENSOR_SCHEMA_SIZE
from leyline.tensors import BatchConverter
from leyline.wire import encode

Rows = npt.NDArray[np.float32]

# --- the oracles: the numpy passes of 2026-12-03 (bus/columnar.py, leyline/features.py) -----


def _oracle_bad_rows(rows: Rows) -> list[int]:
    """RowChecker.bad_rows before the kernel: masked bit patterns over limits, and the
    counting features' floor test."""
    bits = rows.view(np.uint32)
    over = (bits & _MASK) > _LIMIT
    counts = rows[:, _WHOLE]
    fractional = np.floor(counts) != counts
    return np.flatnonzero(over.any(axis=1) | fractional.any(axis=1)).tolist()


def _oracle_normalise(rows: Rows) -> Rows:
    """FeatureNormaliser.normalise_into before the kernel: divide, maximum, minimum, NaN."""
    transforms = feature_transforms()
    scale = np.array([t.scale for t in transforms], np.float32)
    low = np.array([t.low for t in transforms], np.float32)
    high = np.array([t.high for t in transforms], np.float32)
    nan = np.array([t.nan_value for t in transforms], np.float32)
    out = np.divide(rows, scale)
    np.maximum(out, low, out=out)
    np.minimum(out, high, out=out)
    np.copyto(out, np.broadcast_to(nan, out.shape), where=np.isnan(out))
    return out


def _oracle_records(joined: bytes) -> tuple[list[int], Rows, list[int], list[int]]:
    """The record check and copies before the kernel: the bad records, then every record's
    features, epoch and slot."""
    mask, value = template_words()
    words = np.frombuffer(joined, "<u8").reshape(-1, len(mask))
    bad = np.flatnonzero(((words & mask) != value).any(axis=1)).tolist()
    records = np.frombuffer(joined, np.uint8).reshape(-1, RECORD_BYTES)
    features = np.ascontiguousarray(records[:, FEATURES_AT:SLOT_AT]).view("<f4")
    return bad, features, records[:, EPOCH_AT].tolist(), records[:, SLOT_AT].tolist()


# --- the strategies --------------------------------------------------------------------------

GOOD_ROW = np.frombuffer(
    FastTrainingSignals.empty().with_values(epoch=7, val_accuracy=55.5, val_loss=1.25).features,
    "<f4",
)
any_float32 = st.floats(width=32, allow_nan=True, allow_infinity=True, allow_subnormal=True)
edgy = st.sampled_from(
    [0.0, -0.0, 1.0, 100.0, 100.5, 10.0, 11.0, 2.0**32, 2.5, 0.5, -1.0, math.nan, math.inf,
     -math.inf, 3.4028234663852886e38, 1e-45]
)  # fmt: skip


@st.composite
def _batches(draw: st.DrawFn) -> Rows:
    """Mostly good rows with some values spoiled, wider than a span or not."""
    count = draw(st.integers(0, 3 * kernels.SPAN_ROWS + 5))
    rows = np.tile(GOOD_ROW, (count, 1))
    for _ in range(draw(st.integers(0, max(1, count // 3)))):
        if count:
            row = draw(st.integers(0, count - 1))
            column = draw(st.integers(0, TENSOR_SCHEMA_SIZE - 1))
            rows[row, column] = draw(any_float32 | edgy)
    return rows


# --- the properties --------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(_batches())
def test_the_row_check_flags_exactly_the_rows_numpy_flagged(rows: Rows) -> None:
    assert RowChecker(64).bad_rows(rows).tolist() == _oracle_bad_rows(rows)
    assert _oracle_bad_rows(rows) == [
        i for i, row in enumerate(rows.tolist()) if refusal(row) is not None
    ]


@settings(max_examples=200, deadline=None)
@given(
    st.integers(0, 40).flatmap(
        lambda n: arrays(np.float32, (n, TENSOR_SCHEMA_SIZE), elements=any_float32 | edgy)
    )
)
def test_normalising_any_values_is_bit_for_bit_numpys(rows: Rows) -> None:
    out = np.empty_like(rows)
    FeatureNormaliser().normalise_into(rows, out)

    assert out.view(np.uint32).tolist() == _oracle_normalise(rows).view(np.uint32).tolist()


@settings(max_examples=300, deadline=None)
@given(_batches())
def test_converting_rows_keeps_and_refuses_exactly_what_numpy_did(rows: Rows) -> None:
    converter = BatchConverter(64, device="cpu")
    bad = _oracle_bad_rows(rows)
    kept = np.delete(rows, bad, axis=0)

    batch = converter.convert_rows(rows).numpy()

    assert batch.view(np.uint32).tolist() == _oracle_normalise(kept).view(np.uint32).tolist()
    assert [(i, str(e), e.reason, e.path) for i, e in converter.refused] == [
        (i, str(e), e.reason, e.path) for i in bad if (e := refusal(rows[i].tolist())) is not None
    ]
    assert converter.refused_total == len(bad)


def _record(epoch: int, slot: int, seed: int) -> bytearray:
    values = [float(seed + k) for k in range(TENSOR_SCHEMA_SIZE)]
    return bytearray(encode(FastTrainingSignals(epoch, FEATURE_BLOCK.pack(*values), slot)))


#: Ways a record of the right size breaks the template: byte offset, and the byte put there.
_SPOILS = {
    "array header": (0, 0x95),
    "tag": (5, ord("X")),
    "version": (len(b"\x94\xb6FastTrainingSignals.v"), ord("9")),
    "epoch past a fixint": (EPOCH_AT, 0xCC),
    "bin8 header": (EPOCH_AT + 1, 0xC5),
    "block size": (EPOCH_AT + 2, 0x6B),
    "slot past a fixint": (SLOT_AT, 0x80),
}


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 127), st.integers(0, 127), st.sampled_from([None, *sorted(_SPOILS)])
        ),
        max_size=3 * kernels.SPAN_ROWS + 3,
    )
)
def test_the_record_take_refuses_and_copies_exactly_what_numpy_did(
    records: list[tuple[int, int, str | None]],
) -> None:
    payloads = []
    for index, (epoch, slot, spoil) in enumerate(records):
        record = _record(epoch, slot, index)
        if spoil is not None:
            at, byte = _SPOILS[spoil]
            record[at] = byte
        payloads.append(bytes(record))
    joined = b"".join(payloads)
    capacity = len(records) + 1
    features = np.full((capacity, TENSOR_SCHEMA_SIZE), np.nan, np.float32)
    epoch, slot, bad = (np.full(capacity, -1, np.int64) for _ in range(3))
    mask, value = template_words()
    template = (kernels.tiled(mask), kernels.tiled(value))

    count = kernels.take_records(joined, template, features.view(np.uint8), epoch, slot, bad)

    want_bad, want_features, want_epoch, want_slot = _oracle_records(joined)
    assert bad[:count].tolist() == want_bad
    assert want_bad == [i for i, (_, _, spoil) in enumerate(records) if spoil is not None]
    n = len(records)
    assert features[:n].tobytes() == want_features.tobytes()
    assert (epoch[:n].tolist(), slot[:n].tolist()) == (want_epoch, want_slot)
    assert np.isnan(features[n]).all() and epoch[n] == slot[n] == -1  # nothing past the drain


def test_the_template_is_the_contracts_empty_signal() -> None:
    mask, value = template_words()
    words = np.frombuffer(TEMPLATE, "<u8")

    assert ((words & mask) == value).all()
    assert len(TEMPLATE) == RECORD_BYTES
