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
arrival number, how many rows are pending and the running counts of accepted, conflated and
stale signals. A full queue is compacted in the pass; only one too short even then goes
back to the caller to grow (each Python step around a pass costs ~1-2 us when the
policy's forward has just left the caches cold: bench inference).

`submit_paired` also finds each signal's memory row by (sender, slot) in a table (the
controller's intake numbers the senders), so a drained block is queued in one call.
"""

from __future__ import annotations

import numba
import numpy as np
import numpy.typing as npt

HEAD, TAIL, NEXT, PENDING, ACCEPTED, CONFLATED, STALE = range(7)
#: No row is skipped (`submit_block`).
NO_SKIP = np.zeros(0, np.bool_)

_I64 = numba.int64[::1]
_F64 = numba.float64[::1]
_F32_2D = numba.float32[:, ::1]
_B1 = numba.boolean[::1]


@numba.njit(inline="always")
def _make_room(
    count: int,
    queue_rows: npt.NDArray[np.int64],
    queue_order: npt.NDArray[np.int64],
    counters: npt.NDArray[np.int64],
) -> bool:  # pragma: no cover - compiled
    """Room for `count` more queue entries, the live ones moved to the front if need be;
    False when the queue is too short even then (the caller grows it)."""
    head, tail = counters[HEAD], counters[TAIL]
    if tail + count <= len(queue_rows):
        return True
    live = tail - head
    if live + count > len(queue_rows):
        return False
    for k in range(live):
        queue_rows[k] = queue_rows[head + k]
        queue_order[k] = queue_order[head + k]
    counters[HEAD], counters[TAIL] = 0, live
    return True


@numba.njit(
    numba.int64(
        _I64, _I64, _F32_2D, numba.float64, _I64, _I64, _I64, _F64, _F32_2D, _I64, _I64, _I64,
        _B1, _B1,
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
    skip: npt.NDArray[np.bool_],
) -> int:  # pragma: no cover - compiled
    """Queue each (row, epoch) in order, by the rules: `block[i]` goes to `table[rows[i]]`
    when accepted, `taken[i]` says whether it was; a row whose `skip[row]` is set (when
    `skip` is not empty) is passed over, not counted. Returns how many were accepted, or -1
    when the queue has too little room (nothing queued).

    The rules are this one loop, not a helper called per row: an array passed to a compiled
    helper costs a reference count step each way (~40 ns a row for this state).
    """
    if not _make_room(len(rows), queue_rows, queue_order, counters):
        return -1
    accepted = conflated = stale = 0
    skipping = len(skip) > 0
    width = block.shape[1]
    for i in range(len(rows)):
        row = rows[i]
        value = epochs[i]
        taken[i] = False
        if skipping and skip[row]:
            continue
        pending = order[row]
        if value <= decided[row] or (pending and value < epoch[row]):
            stale += 1
            continue
        if pending:
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
    counters[ACCEPTED] += accepted
    counters[CONFLATED] += conflated
    counters[STALE] += stale
    return accepted


@numba.njit(
    numba.int64(
        _I64, _I64, _I64, numba.int64[:, ::1], _B1, _I64, _F32_2D, numba.float64, _I64, _I64,
        _I64, _F64, _F32_2D, _I64, _I64, _I64, _B1, _I64,
    ),
    cache=True,
    nogil=True,
)  # fmt: skip
def submit_paired(
    senders: npt.NDArray[np.int64],
    starts: npt.NDArray[np.int64],
    slot_index: npt.NDArray[np.int64],
    pairs: npt.NDArray[np.int64],
    skip: npt.NDArray[np.bool_],
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
    rows: npt.NDArray[np.int64],
) -> int:  # pragma: no cover - compiled
    """`submit_block` for rows found by pair: row i of group g (rows `starts[g]` to the next
    group's start) is memory row `pairs[senders[g], slot_index[i]]`, written into `rows`;
    a row whose `skip[row]` is set is passed over (not taken, not counted).

    Returns how many were accepted; -1 when a row has no memory row (-1 in `pairs`, or a
    slot index past its width) and -2 when the queue has too little room. Either way
    nothing is queued, and `rows` holds every row found (-1 for those not).
    """
    count, width = len(slot_index), pairs.shape[1]
    missing = False
    for group in range(len(senders)):
        stop = starts[group + 1] if group + 1 < len(senders) else count
        sender = senders[group]
        for i in range(starts[group], stop):
            slot = slot_index[i]
            row = pairs[sender, slot] if 0 <= slot < width else -1
            rows[i] = row
            missing |= row < 0
    if missing:
        return -1
    accepted = submit_block(
        rows[:count], epochs, block, now, decided, epoch, order, arrived, table, queue_rows,
        queue_order, counters, taken, skip,
    )  # fmt: skip
    return -2 if accepted < 0 else accepted


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
