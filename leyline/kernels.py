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
Indices = npt.NDArray[np.int64]


def tiled(column: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """A per-feature column repeated for one span of rows, as the row kernels take it."""
    return np.ascontiguousarray(np.tile(column, SPAN_ROWS))


@_inline
def _over(
    flat: Floats, bits: Words, start: int, size: int, mask: Words, limit: Words, whole: Words
) -> np.uint32:
    """Nonzero when a value of `flat[start:start + size]` (a span or a row) breaks its
    feature's range: its bit pattern (the sign masked off where the range is symmetric) above
    the limit's, as NaN's and the infinities' are; or a counting feature (`whole`) not a
    whole number."""
    over = np.uint32(0)
    for k in range(size):
        value = flat[start + k]
        over |= np.uint32((bits[start + k] & mask[k]) > limit[k])
        over |= np.uint32(np.floor(value) != value) & whole[k]
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
    [low, high] (the infinities to the bounds), NaN to the feature's neutral value."""
    for k in range(size):
        scaled = min(max(flat[start + k] / scale[k], low[k]), high[k])
        out[start + k] = nan[k] if scaled != scaled else scaled


@_inline
def _name_rows(
    flat: Floats,
    bits: Words,
    start: int,
    size: int,
    width: int,
    mask: Words,
    limit: Words,
    whole: Words,
    bad: Indices,
    count: int,
) -> int:
    """Append the rows of a span that broke a range to `bad`; the count after."""
    first = start // width
    for row in range(first, first + size // width):
        if _over(flat, bits, row * width, width, mask, limit, whole):
            bad[count] = row
            count += 1
    return count


@_jit
def bad_rows(values: Floats, mask: Words, limit: Words, whole: Words, bad: Indices) -> int:
    """The rows of `values` [B, F] that break a range, ascending, into `bad`; how many."""
    flat = values.reshape(-1)
    bits = flat.view(np.uint32)
    span, width, total = mask.shape[0], values.shape[1], flat.shape[0]
    count = 0
    spans = total // span
    full = spans * span
    # Whole spans counted by index, then the rest: a stepped range, or a trip count of
    # min(span, rest), keeps LLVM from vectorising the span's loop (9x slower, measured).
    for index in range(spans):
        start = index * span
        if _over(flat, bits, start, span, mask, limit, whole):
            count = _name_rows(flat, bits, start, span, width, mask, limit, whole, bad, count)
    if _over(flat, bits, full, total - full, mask, limit, whole):
        count = _name_rows(flat, bits, full, total - full, width, mask, limit, whole, bad, count)
    return count


@_jit
def normalise(
    values: Floats, out: Floats, scale: Floats, low: Floats, high: Floats, nan: Floats
) -> None:
    """Every row of `values` [B, F] normalised into `out` [B, F] (which may be `values`)."""
    flat, flat_out = values.reshape(-1), out.reshape(-1)
    span, total = scale.shape[0], flat.shape[0]
    spans = total // span
    full = spans * span
    for index in range(spans):
        start = index * span
        _scale_span(flat, flat_out, start, span, scale, low, high, nan)
    _scale_span(flat, flat_out, full, total - full, scale, low, high, nan)


@_jit
def check_normalise(
    values: Floats,
    out: Floats,
    mask: Words,
    limit: Words,
    whole: Words,
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
    count = 0
    spans = total // span
    full = spans * span
    for index in range(spans):
        start = index * span
        if _over(flat, bits, start, span, mask, limit, whole):
            count = _name_rows(flat, bits, start, span, width, mask, limit, whole, bad, count)
        _scale_span(flat, flat_out, start, span, scale, low, high, nan)
    rest = total - full
    if _over(flat, bits, full, rest, mask, limit, whole):
        count = _name_rows(flat, bits, full, rest, width, mask, limit, whole, bad, count)
    _scale_span(flat, flat_out, full, rest, scale, low, high, nan)
    return count


@_jit
def take_records(
    words: npt.NDArray[np.uint64],
    mask: npt.NDArray[np.uint64],
    value: npt.NDArray[np.uint64],
    epoch_at: int,
    slot_at: int,
    epoch: Indices,
    slot: Indices,
    bad: Indices,
) -> int:
    """Fixed-size records, the rows of `words` [N, W], checked against their template: the
    records whose fixed bits differ (`words & mask != value`) into `bad`, ascending; the
    bytes at `epoch_at` and `slot_at` into rows 0..N of `epoch` and `slot`; how many are bad.

    The feature blocks are the caller's one strided numpy copy: a byte loop here, or a
    shifted word loop for their odd offset, stays scalar (8-15x slower, measured).
    """
    records = words.reshape(-1).view(np.uint8)
    size = words.shape[1] * 8
    count = 0
    for row in range(words.shape[0]):
        differs = np.uint64(0)
        for word in range(words.shape[1]):
            differs |= (words[row, word] & mask[word]) ^ value[word]
        if differs:
            bad[count] = row
            count += 1
        epoch[row] = records[row * size + epoch_at]
        slot[row] = records[row * size + slot_at]
    return count
