"""The compiled passes of the fast-signal path: record bytes to rows, and rows to model input.

Each check or transform here is one numba loop over a whole batch, one read of each byte:
numpy needs a call per step (~1-3 us each, more than ten for a batch: bench convert). The
rules are data given by their owners (the record template by `bus.columnar`, the feature
ranges and scales by `leyline.features`); each rule is written once, here.

Row kernels run over the flat batch in spans of `SPAN_ROWS` rows against per-feature columns
tiled to one span (`tiled`): a span's values are a whole number of SIMD lanes, where a
27-wide row leaves a scalar remainder in every row, and the columns stay in L1.

numba is imported with this module, which only the owners' constructors import: importing
`leyline` stays free of it. `cache=True` keeps the machine code on disk (beside this file, or
in numba's user cache where that is read-only), so only a host's first start compiles.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, cast

import numba
import numpy as np
import numpy.typing as npt

from leyline.records import (
    EPOCH_AT,
    FEATURE_BYTES,
    FEATURES_AT,
    RECORD_BYTES,
    RECORD_WORDS,
    SLOT_AT,
)

__all__ = [
    "SPAN_ROWS",
    "bad_rows",
    "check_normalise",
    "normalise",
    "take_records",
    "tiled",
]

#: Rows a span holds: a tiled column holds `SPAN_ROWS` rows' worth of its feature's values.
SPAN_ROWS = 16

_Function = TypeVar("_Function", bound=Callable[..., Any])


def _jit(function: _Function) -> _Function:
    """Compiled without Python's semantics inside the loops (a division-by-zero test on every
    divide keeps them scalar) and without fastmath: every result is float32's, bit for bit."""
    return cast("_Function", numba.njit(cache=True, nogil=True, error_model="numpy")(function))


def _inline(function: _Function) -> _Function:
    """`_jit`, inlined into its callers in numba's own IR: LLVM then vectorises the loop in
    place (a call to a compiled helper stays a call, and its loop scalar: 9x slower)."""
    compiled = numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
    return cast("_Function", compiled(function))


Floats = npt.NDArray[np.float32]
Words = npt.NDArray[np.uint32]
Flags = npt.NDArray[np.bool_]
Indices = npt.NDArray[np.int64]
Record = npt.NDArray[np.uint64]


def tiled(column: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """A per-feature column repeated for one span of rows, as the row kernels take it."""
    return np.ascontiguousarray(np.tile(column, SPAN_ROWS))


@_inline
def _over(
    flat: Floats, bits: Words, start: int, size: int, mask: Words, limit: Words, whole: Flags
) -> bool:
    """Whether a value of `flat[start:start + size]` (a span or a row) breaks its feature's
    range: its bit pattern (the sign masked off where the range is symmetric) above the
    limit's, as NaN's and the infinities' are; or a counting feature (`whole`) not a whole
    number. One bool accumulated over the loop, which LLVM vectorises (an integer flag
    accumulated the same way ran 1.5x slower, measured)."""
    over = False
    for k in range(size):
        value = flat[start + k]
        over |= ((bits[start + k] & mask[k]) > limit[k]) | ((np.floor(value) != value) & whole[k])
    return over


@_inline
def _scale_span(
    flat: Floats,
    out: Floats,
    start: int,
    size: int,
    scale: Floats,
    low: Floats,
    high: Floats,
    nan: Floats,
) -> None:
    """`flat[start:start + size]` normalised into `out`: `value / scale` clipped to
    [low, high] (the infinities to the bounds), NaN to the feature's neutral value. The clip
    is numpy's `maximum` then `minimum` exactly: -0.0 against a low of 0.0 becomes 0.0."""
    for k in range(size):
        scaled = flat[start + k] / scale[k]
        clipped = scaled if scaled > low[k] else low[k]
        clipped = clipped if clipped < high[k] else high[k]
        out[start + k] = nan[k] if scaled != scaled else clipped


@_inline
def _check_span(
    flat: Floats,
    bits: Words,
    start: int,
    size: int,
    width: int,
    mask: Words,
    limit: Words,
    whole: Flags,
    bad: Indices,
    count: int,
) -> int:
    """Append the rows of a span (`width` values each) that break a range to `bad`, looking
    at them one by one only when the span as a whole did; the count after."""
    if _over(flat, bits, start, size, mask, limit, whole):
        first = start // width
        for row in range(first, first + size // width):
            if _over(flat, bits, row * width, width, mask, limit, whole):
                bad[count] = row
                count += 1
    return count


@_jit
def bad_rows(values: Floats, mask: Words, limit: Words, whole: Flags, bad: Indices) -> int:
    """The rows of `values` [B, F] that break a range, ascending, into `bad`; how many."""
    flat = values.reshape(-1)
    bits = flat.view(np.uint32)
    span, width, total = mask.shape[0], values.shape[1], flat.shape[0]
    spans = total // span
    count = 0
    # Whole spans counted by index, then the rest: a stepped range, or a trip count of
    # min(span, rest), keeps LLVM from vectorising the span's loop (9x slower, measured).
    for index in range(spans):
        count = _check_span(flat, bits, index * span, span, width, mask, limit, whole, bad, count)
    rest = total - spans * span
    return _check_span(flat, bits, total - rest, rest, width, mask, limit, whole, bad, count)


@_jit
def normalise(
    values: Floats, out: Floats, scale: Floats, low: Floats, high: Floats, nan: Floats
) -> None:
    """Every row of `values` [B, F] normalised into `out` [B, F] (which may be `values`)."""
    flat, flat_out = values.reshape(-1), out.reshape(-1)
    span, total = scale.shape[0], flat.shape[0]
    spans = total // span
    for index in range(spans):
        _scale_span(flat, flat_out, index * span, span, scale, low, high, nan)
    rest = total - spans * span
    _scale_span(flat, flat_out, total - rest, rest, scale, low, high, nan)


@_jit
def check_normalise(
    values: Floats,
    out: Floats,
    mask: Words,
    limit: Words,
    whole: Flags,
    scale: Floats,
    low: Floats,
    high: Floats,
    nan: Floats,
    bad: Indices,
) -> int:
    """`bad_rows` and `normalise` in one read of `values`: every row normalised into `out`
    (not `values`, whose refused rows stay readable, to be named), the refused rows' indices
    into `bad`; how many were refused."""
    flat, flat_out = values.reshape(-1), out.reshape(-1)
    bits = flat.view(np.uint32)
    span, width, total = mask.shape[0], values.shape[1], flat.shape[0]
    spans = total // span
    count = 0
    for index in range(spans):
        start = index * span
        count = _check_span(flat, bits, start, span, width, mask, limit, whole, bad, count)
        _scale_span(flat, flat_out, start, span, scale, low, high, nan)
    rest = total - spans * span
    _scale_span(flat, flat_out, total - rest, rest, scale, low, high, nan)
    return _check_span(flat, bits, total - rest, rest, width, mask, limit, whole, bad, count)


@_inline
def _differs(words: Record, start: int, size: int, mask: Record, value: Record) -> bool:
    """Whether a fixed bit of `words[start:start + size]` (a span of records, or one)
    differs from the template's tiled `mask` and `value`."""
    differs = False
    for k in range(size):
        differs |= (words[start + k] & mask[k]) != value[k]
    return differs


@_inline
def _name_records(
    words: Record, start: int, size: int, mask: Record, value: Record, bad: Indices, count: int
) -> int:
    """Append the records of a span that differ from the template to `bad`; the count after."""
    first = start // RECORD_WORDS
    for row in range(first, first + size // RECORD_WORDS):
        if _differs(words, row * RECORD_WORDS, RECORD_WORDS, mask, value):
            bad[count] = row
            count += 1
    return count


@_jit
def _take_records(
    words: Record,
    records: npt.NDArray[np.uint8],
    mask: Record,
    value: Record,
    features: npt.NDArray[np.uint8],
    epoch: Indices,
    slot: Indices,
    bad: Indices,
) -> int:
    """`FastTrainingSignals.v2` records (`leyline.records`) into rows 0..N: the drain's
    records as 64-bit `words` and as `records` [N, RECORD_BYTES] (two views of the same
    bytes); each one's feature block into `features` (the float32 rows viewed as bytes,
    [rows, 108]), its epoch and slot bytes into `epoch` and `slot`. The records whose fixed
    bits differ from the template (`mask` and `value` tiled to a span) into `bad`,
    ascending; how many are bad. The layout is compiled in: a byte loop of a width and
    offset known only at run time stays scalar (25x slower, measured)."""
    span, total = mask.shape[0], words.shape[0]
    spans = total // span
    full = spans * span
    count = 0
    for index in range(spans):
        start = index * span
        if _differs(words, start, span, mask, value):
            count = _name_records(words, start, span, mask, value, bad, count)
    if _differs(words, full, total - full, mask, value):
        count = _name_records(words, full, total - full, mask, value, bad, count)
    for row in range(records.shape[0]):
        for byte in range(FEATURE_BYTES):
            features[row, byte] = records[row, FEATURES_AT + byte]
        epoch[row] = records[row, EPOCH_AT]
        slot[row] = records[row, SLOT_AT]
    return count


def take_records(
    joined: bytes,
    template: tuple[Record, Record],
    features: npt.NDArray[np.uint8],
    epoch: Indices,
    slot: Indices,
    bad: Indices,
) -> int:
    """A drain's records, joined into one `bytes`, through `_take_records`: read by two
    views of it (no copy), checked against `template` (its mask and value, `tiled`)."""
    words = np.frombuffer(joined, "<u8")
    records = np.frombuffer(joined, np.uint8).reshape(-1, RECORD_BYTES)
    return int(_take_records(words, records, *template, features, epoch, slot, bad))


def _warm() -> None:
    """Compile (or load from the cache) every kernel for the array types its callers pass,
    read-only record views included, so that a service pays it when it builds its receiver
    or converter and not inside its first drain (3.6 s cold, 0.4 s cached, on the 2-core VM)."""
    rows = np.zeros((1, FEATURE_BYTES // 4), np.float32)
    ranges = (np.zeros(rows.shape[1], np.uint32),) * 2 + (np.zeros(rows.shape[1], np.bool_),)
    scales = (np.ones(rows.shape[1], np.float32),) * 4
    bad = np.empty(1, np.int64)
    bad_rows(rows, *ranges, bad)
    normalise(rows, rows.copy(), *scales)
    check_normalise(rows, rows.copy(), *ranges, *scales, bad)
    words = np.zeros(RECORD_WORDS, np.uint64)
    take_records(
        bytes(RECORD_BYTES), (words, words), rows.view(np.uint8), bad, bad.copy(), bad.copy()
    )


_warm()
