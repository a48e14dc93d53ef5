"""The batcher's conflation rules as compiled loops over its per-row arrays.

A block of B signals is one call here, not B Python steps and B objects: at B = 256 the
Python form (a dict lookup, a comparison and a `PendingSignal` per signal) was a third of
the loop's host time (bench inference). The rules are `SignalBatcher`'s, applied one signal
after the other exactly as written there; a property test holds the two forms equal.

State, per memory row: `decided` (the last decided epoch, -1 for none), `epoch`, `order`
(0 when nothing is pending, else the pending signal's arrival number) and `arrived`. The
queue holds (row, arrival number) in arrival order; an entry is live while its row's
`order` still equals its number (a forget or a take ends it), so conflation keeps a
signal's place and a forgotten one is skipped. `counters` holds head, tail, the next
arrival number and how many rows are pending.
"""

from __future__ import annotations

import numba
import numpy as np
import numpy.typing as npt

HEAD, TAIL, NEXT, PENDING = range(4)

_I64 = numba.int64[::1]
_F64 = numba.float64[::1]
_F32_2D = numba.float32[:, ::1]
_B1 = numba.boolean[::1]


@numba.njit(
    numba.int64[::1](
        _I64, _I64, _F32_2D, numba.float64, _I64, _I64, _I64, _F64, _F32_2D, _I64, _I64, _I64,
        _B1,
    ),
    cache=True,
    nogil=True,
)  # fmt: skip
def submit_block(
    rows: npt.NDArray[np.int64],
    epochs: npt.NDArray[np.int64],
    block: npt.NDArray[np.float32],
    now: float,
    decided: npt.NDArray[np.int64],
    epoch: npt.NDArray[np.int64],
    order: npt.NDArray[np.int64],
    arrived: npt.NDArray[np.float64],
    table: npt.NDArray[np.float32],
    queue_rows: npt.NDArray[np.int64],
    queue_order: npt.NDArray[np.int64],
    counters: npt.NDArray[np.int64],
    taken: npt.NDArray[np.bool_],
) -> npt.NDArray[np.int64]:  # pragma: no cover - compiled
    """Queue each (row, epoch) in order; `block[i]` goes to `table[rows[i]]` when accepted.

    `taken[i]` says whether signal i was accepted; the queue has room for every signal.
    Returns (accepted, conflated, stale).
    """
    accepted = conflated = stale = 0
    width = block.shape[1]
    for i in range(len(rows)):
        row = rows[i]
        value = epochs[i]
        if value <= decided[row]:
            stale += 1
            taken[i] = False
            continue
        if order[row]:
            if value < epoch[row]:
                stale += 1
                taken[i] = False
                continue
            conflated += 1
        else:
            number = counters[NEXT]
            counters[NEXT] = number + 1
            order[row] = number
            arrived[row] = now
            tail = counters[TAIL]
            queue_rows[tail] = row
            queue_order[tail] = number
            counters[TAIL] = tail + 1
            counters[PENDING] += 1
        epoch[row] = value
        for j in range(width):
            table[row, j] = block[i, j]
        taken[i] = True
        accepted += 1
    result = np.empty(3, np.int64)
    result[0], result[1], result[2] = accepted, conflated, stale
    return result


@numba.njit(
    numba.int64(numba.int64, _I64, _I64, _I64, _I64, _I64, _I64, _I64, _I64, _F64, _F64),
    cache=True,
    nogil=True,
)
def take_batch(
    limit: int,
    decided: npt.NDArray[np.int64],
    epoch: npt.NDArray[np.int64],
    order: npt.NDArray[np.int64],
    queue_rows: npt.NDArray[np.int64],
    queue_order: npt.NDArray[np.int64],
    counters: npt.NDArray[np.int64],
    out_rows: npt.NDArray[np.int64],
    out_epochs: npt.NDArray[np.int64],
    arrived: npt.NDArray[np.float64],
    out_arrived: npt.NDArray[np.float64],
) -> int:  # pragma: no cover - compiled
    """Move the oldest `limit` pending rows into `out_rows` (with their epochs and
    arrival times), record their epochs as decided; how many. The head is left on a live
    entry (or at the tail)."""
    head, tail = counters[HEAD], counters[TAIL]
    count = 0
    while head < tail and count < limit:
        row = queue_rows[head]
        if order[row] == queue_order[head]:
            out_rows[count] = row
            out_epochs[count] = epoch[row]
            out_arrived[count] = arrived[row]
            decided[row] = epoch[row]
            order[row] = 0
            count += 1
        head += 1
    while head < tail and order[queue_rows[head]] != queue_order[head]:
        head += 1
    counters[HEAD] = head
    counters[PENDING] -= count
    return count


@numba.njit(numba.void(_I64, _I64, _I64, _I64), cache=True, nogil=True)
def skip_ended(
    order: npt.NDArray[np.int64],
    queue_rows: npt.NDArray[np.int64],
    queue_order: npt.NDArray[np.int64],
    counters: npt.NDArray[np.int64],
) -> None:  # pragma: no cover - compiled
    """Move the head past entries no longer pending (after a forget)."""
    head, tail = counters[HEAD], counters[TAIL]
    while head < tail and order[queue_rows[head]] != queue_order[head]:
        head += 1
    counters[HEAD] = head
