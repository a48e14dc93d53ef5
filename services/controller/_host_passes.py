"""The inference loop's per-batch host steps around the policy, each one compiled pass.

In numpy each of these is two to ten calls (a fancy index, a cast, reductions, a gather),
~2-4 us each on the VM: at B = 256 the decision columns, the masks and the check of the
policy's output were ~120 us together against a ~180 us MLP forward (bench inference).
The rules stay with their owners, as data: the mask table with `ActionMasker`, the column
sources with `ColumnBuffer`, the reason range with `InferenceLoop`.
"""

from __future__ import annotations

import numba
import numpy as np
import numpy.typing as npt

from leyline.kernels import bad_rows, normalise

_I64 = numba.int64[::1]
_F32 = numba.float32[::1]


@numba.njit(
    numba.void(numba.float32[:, ::1], _I64, _I64, numba.float64[:, ::1]), cache=True, nogil=True
)
def fill_columns(
    raw: npt.NDArray[np.float32],
    rows: npt.NDArray[np.int64],
    sources: npt.NDArray[np.int64],
    out: npt.NDArray[np.float64],
) -> None:  # pragma: no cover - compiled
    """`out[i] = (rows[i], raw[i, sources[0]], raw[i, sources[1]], ...)`, widened exactly."""
    for i in range(len(rows)):
        out[i, 0] = rows[i]
        for j in range(len(sources)):
            out[i, j + 1] = raw[i, sources[j]]


@numba.njit(
    numba.int64(numba.float64[:, ::1], numba.int64, numba.int64, numba.int64,
                numba.boolean[:, ::1], numba.boolean[:, ::1]),
    cache=True,
    nogil=True,
)  # fmt: skip
def legal_masks(
    columns: npt.NDArray[np.float64],
    stage_at: int,
    active_at: int,
    available_at: int,
    table: npt.NDArray[np.bool_],
    out: npt.NDArray[np.bool_],
) -> int:  # pragma: no cover - compiled
    """Each row's mask, `table[2 * stage + can germinate]` (no active seed, a slot free);
    -1 - i when row i's stage has no row in the table, else 0."""
    stages = table.shape[0] // 2
    width = table.shape[1]
    for i in range(columns.shape[0]):
        stage = columns[i, stage_at]
        if not (0 <= stage < stages):
            return -1 - i
        can = columns[i, active_at] == 0 and columns[i, available_at] > 0
        line = 2 * int(stage) + (1 if can else 0)
        for j in range(width):
            out[i, j] = table[line, j]
    return 0


@numba.njit(
    numba.int64(numba.float32[:, ::1], _I64, numba.uint32[::1], numba.uint32[::1],
                numba.boolean[::1], _F32, _F32, _F32, _F32, _I64, numba.int64, numba.int64,
                numba.int64, numba.boolean[:, ::1], numba.float32[:, ::1],
                numba.float32[:, ::1], numba.float64[:, ::1], numba.boolean[:, ::1], _I64),
    cache=True,
    nogil=True,
)  # fmt: skip
def stage_batch(
    table: npt.NDArray[np.float32],
    rows: npt.NDArray[np.int64],
    mask: npt.NDArray[np.uint32],
    limit: npt.NDArray[np.uint32],
    whole: npt.NDArray[np.bool_],
    scale: npt.NDArray[np.float32],
    low: npt.NDArray[np.float32],
    high: npt.NDArray[np.float32],
    nan: npt.NDArray[np.float32],
    sources: npt.NDArray[np.int64],
    stage_at: int,
    active_at: int,
    available_at: int,
    mask_table: npt.NDArray[np.bool_],
    staged: npt.NDArray[np.float32],
    features: npt.NDArray[np.float32],
    columns: npt.NDArray[np.float64],
    masks: npt.NDArray[np.bool_],
    bad: npt.NDArray[np.int64],
) -> int:  # pragma: no cover - compiled
    """A decision batch's host inputs, every step of it in one call: the raw rows `table[rows]`
    into `staged`, checked (`bad_rows`: mask, limit, whole), their decision columns
    (`fill_columns`) and masks (`legal_masks`), then normalised into `features` (`normalise`:
    scale, low, high, nan; in place it ran 3x slower, unvectorised for the aliasing). Stops
    at the first step that fails: the count of refused rows (their indices in `bad`, the raw
    rows in `staged` to be named), or `legal_masks`'s -1 - i for a row whose stage has no
    mask; 0 when all is staged."""
    count, width = len(rows), table.shape[1]
    raw = staged[:count]
    for i in range(count):  # element by element: a row slice per row costs 5x as much
        source = rows[i]
        for j in range(width):
            raw[i, j] = table[source, j]
    refused = bad_rows(raw, mask, limit, whole, bad)
    if refused:
        return refused
    fill_columns(raw, rows, sources, columns)
    missing = legal_masks(columns[:count], stage_at, active_at, available_at, mask_table, masks)
    if missing:
        return missing
    normalise(raw, features[:count], scale, low, high, nan)
    return 0


@numba.njit(
    numba.int64(_I64, _I64, numba.float64[::1], numba.boolean[:, ::1], numba.int64,
                numba.int64, numba.int64, numba.int64, _I64, _I64, numba.float64[::1]),
    cache=True,
    nogil=True,
)  # fmt: skip
def check_proposals(
    actions: npt.NDArray[np.int64],
    reasons: npt.NDArray[np.int64],
    confidence: npt.NDArray[np.float64],
    legal: npt.NDArray[np.bool_],
    wait: int,
    refused_reason: int,
    first_reason: int,
    last_reason: int,
    chosen: npt.NDArray[np.int64],
    why: npt.NDArray[np.int64],
    sure: npt.NDArray[np.float64],
) -> int:  # pragma: no cover - compiled
    """The policy's proposals held to the contract into `chosen`, `why`, `sure`: an action
    out of range or not legal for its row, or a reason outside [first, last], becomes
    `wait` with `refused_reason` and confidence 1.0; any other confidence is clamped to
    [0, 1], NaN to 0. How many were refused."""
    width = legal.shape[1]
    refused = 0
    for i in range(len(actions)):
        action, reason, value = actions[i], reasons[i], confidence[i]
        if value != value:
            value = 0.0
        value = min(max(value, 0.0), 1.0)
        if 0 <= action < width and legal[i, action] and first_reason <= reason <= last_reason:
            chosen[i], why[i], sure[i] = action, reason, value
        else:
            chosen[i], why[i], sure[i] = wait, refused_reason, 1.0
            refused += 1
    return refused
