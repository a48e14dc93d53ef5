"""Freshest-wins conflation of fast signals and the micro-batching clock, with no threads.

Signals are keyed by (worker, slot). A newer signal replaces the pending one in place, so it
keeps the queue position and the arrival time of the first (a busy slot cannot starve the
batch). A signal no newer than one already pending, or already decided, is stale and dropped.
Time is whatever clock the caller passes (`time.monotonic()` by default), so tests drive it.

Each (worker, slot) gets a memory row at its first signal, for good. The pending state is
arrays over those rows (epochs, arrival order and time, the last decided epoch) and a queue
of rows in arrival order; a block of signals is one compiled pass over them
(`services.controller._conflation`), with no object per signal. A signal's raw features go
into the batcher's feature table at its row when it is accepted, whether it came as a row
of a columnar receive (`submit_block`, `submit_rows`, `submit_paired`) or as an object (`submit`,
`submit_many`, which also keep the object for readers of the batch). A taken batch is a
`PendingBatch` of arrays (`services.controller.pending`).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence

import numpy as np
import numpy.typing as npt

from leyline import FastTrainingSignals
from leyline.features import write_raw
from leyline.signals import TENSOR_SCHEMA_SIZE
from services.controller import _conflation
from services.controller._conflation import ACCEPTED, CONFLATED, HEAD, NEXT, PENDING, STALE, TAIL
from services.controller.pending import PendingBatch, RowNames, SlotKey, grown

_Ints = npt.NDArray[np.int64]


#: One value of a feature block (`leyline.signals.FEATURE_BLOCK`): little-endian float32.
_BLOCK = np.dtype("<f4")


class SignalBatcher:
    """Holds the freshest signal per (worker, slot) and hands them out in micro-batches.

    A batch is ready when `max_batch` slots are pending, or when the oldest pending signal
    has waited `max_wait_s`. Counters: `accepted`, `conflated` (replaced a pending one) and
    `stale` (dropped).
    """

    def __init__(self, max_batch: int, max_wait_s: float) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        if max_wait_s < 0:
            raise ValueError(f"max_wait_s must not be negative, got {max_wait_s}")
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        #: A memory row per (worker, slot) ever seen, in order of first arrival.
        self.rows: dict[SlotKey, int] = {}
        self.names = RowNames()
        #: The slots seen of each worker and their rows, so forgetting one worker touches
        #: only its own keys.
        self._slots: dict[str, dict[str, int]] = {}
        #: The raw features [rows, 27] of each memory row's latest accepted signal.
        self.features = np.zeros((64, TENSOR_SCHEMA_SIZE), np.float32)
        # Per memory row (see `_conflation`): the last decided epoch (-1: none), the pending
        # epoch, the pending arrival number (0: none pending) and arrival time.
        self._decided = np.full(64, -1, np.int64)
        self._epoch = np.zeros(64, np.int64)
        self._order = np.zeros(64, np.int64)
        self._arrived = np.zeros(64, np.float64)
        self._queue_rows = np.zeros(256, np.int64)
        self._queue_order = np.zeros(256, np.int64)
        self._counters = np.zeros(7, np.int64)
        self._counters[NEXT] = 1
        # What a take writes into (copied out for the batch).
        self._out_rows = np.empty(max_batch, np.int64)
        self._out_epochs = np.empty(max_batch, np.int64)
        self._out_arrived = np.empty(max_batch, np.float64)
        self._taken = np.empty(64, np.bool_)
        #: Pending signals that came as objects, by memory row (for readers of the batch).
        self._objects: dict[int, FastTrainingSignals] = {}
        self._staged = np.empty((64, TENSOR_SCHEMA_SIZE), np.float32)
        self._one = (
            np.empty(1, np.int64),
            np.empty(1, np.int64),
            np.empty((1, TENSOR_SCHEMA_SIZE), np.float32),
        )

    @property
    def accepted(self) -> int:
        return int(self._counters[ACCEPTED])

    @property
    def conflated(self) -> int:
        """Accepted signals that replaced a pending one."""
        return int(self._counters[CONFLATED])

    @property
    def stale(self) -> int:
        """Signals dropped: no newer than the pending or last decided epoch."""
        return int(self._counters[STALE])

    def __len__(self) -> int:
        return int(self._counters[PENDING])

    def row(self, worker_id: str, slot_id: str) -> int:
        """The memory row of (worker, slot), given to it at first sight and kept for good."""
        key = (worker_id, slot_id)
        row = self.rows.get(key)
        if row is None:
            row = self.rows[key] = len(self.rows)
            self._slots.setdefault(worker_id, {})[slot_id] = row
            self.names.add(worker_id, slot_id)
            self.reserve(row + 1)
        return row

    def submit(
        self,
        worker_id: str,
        slot_id: str,
        signal: FastTrainingSignals,
        now: float | None = None,
    ) -> bool:
        """Queue `signal` for its slot; False when it is stale and was dropped.

        `submit_block`'s pass over a block of one, staged in preallocated arrays: through
        `submit_many` a lone signal cost ~10x as much (a join, two `fromiter`s; bench
        stress submits one at a time)."""
        row = self.rows.get((worker_id, slot_id))
        if row is None:
            row = self.row(worker_id, slot_id)
        one_row, one_epoch, one_block = self._one
        one_row[0], one_epoch[0] = row, signal.epoch
        one_block[0] = np.frombuffer(signal.features, _BLOCK)
        if not self._queue(one_row, one_epoch, one_block, now):
            return False
        self._objects[row] = signal
        return True

    def submit_many(
        self,
        keys: Iterable[SlotKey],
        signals: Iterable[FastTrainingSignals],
        now: float | None = None,
    ) -> int:
        """Queue a block of signals as objects, in order; how many were accepted.

        Their feature blocks are staged as rows and queued as `submit_block` queues rows;
        the objects are kept for the batch's readers.
        """
        held = list(signals)
        count = len(held)
        if len(self._staged) < count:
            self._staged = np.empty((2 * count, TENSOR_SCHEMA_SIZE), np.float32)
        staged = write_raw(held, self._staged)
        rows = np.fromiter(
            (self.row(*key) for key in keys), np.int64, count
        )  # a key per signal, or fromiter raises
        epochs = np.fromiter((s.epoch for s in held), np.int64, count)
        accepted = self._queue(rows, epochs, staged, now)
        objects = self._objects
        for index in np.flatnonzero(self._taken[:count]).tolist():
            objects[int(rows[index])] = held[index]
        return accepted

    def submit_rows(
        self,
        keys: Sequence[SlotKey],
        epochs: _Ints | Sequence[int],
        features: npt.NDArray[np.float32],
        now: float | None = None,
    ) -> int:
        """Queue a block of signals that came as rows: `features[i]` [27] is the raw feature
        block of the signal of `keys[i]` at `epochs[i]`; how many were accepted."""
        rows = np.fromiter((self.row(*key) for key in keys), np.int64, len(keys))
        return self.submit_block(rows, np.asarray(epochs, np.int64), features, now)

    def submit_block(
        self,
        rows: _Ints,
        epochs: _Ints,
        features: npt.NDArray[np.float32],
        now: float | None = None,
    ) -> int:
        """Queue a block by memory rows (`row`): `features[i]` is the raw feature block of
        the signal for `rows[i]` at `epochs[i]`; how many were accepted.

        The rules apply one signal after the other (a slot's later signal in the block
        replaces its earlier one); accepted features are copied into `features`, so the
        block's buffers may be reused afterwards.
        """
        accepted = self._queue(rows, epochs, features, now)
        if accepted and self._objects:
            self._drop_objects(rows)
        return accepted

    def submit_paired(
        self,
        pairs: npt.NDArray[np.int64],
        senders: _Ints,
        starts: _Ints,
        slot_index: _Ints,
        skip: npt.NDArray[np.bool_],
        epochs: _Ints,
        features: npt.NDArray[np.float32],
        rows: _Ints,
        now: float | None = None,
    ) -> int:
        """Queue a block whose memory rows are found by pair, in one compiled pass: row i of
        group g (its rows from `starts[g]` to the next group's start) is the signal of memory
        row `pairs[senders[g], slot_index[i]]`, written into `rows`; rows whose `skip[row]`
        is set are passed over. How many were accepted, or -1 (nothing queued) when some row
        has no memory row in `pairs` (-1 there, or a slot index past its width): `rows` then
        holds the rows found and -1 for the others.
        """
        count = len(slot_index)
        arrived = time.monotonic() if now is None else now
        while True:
            if len(self._taken) < count:
                self._taken = np.empty(2 * count, np.bool_)
            accepted: int = _conflation.submit_paired(
                senders, starts, slot_index, pairs, skip, epochs, features, arrived,
                self._decided, self._epoch, self._order, self._arrived, self.features,
                self._queue_rows, self._queue_order, self._counters, self._taken, rows,
            )  # fmt: skip
            if accepted != -2:
                break
            self._grow_queue(count)
        if accepted > 0 and self._objects:
            self._drop_objects(rows[:count])
        return accepted

    def _drop_objects(self, rows: _Ints) -> None:
        """The pending objects of the rows just accepted: replaced by those rows."""
        objects = self._objects
        for index in np.flatnonzero(self._taken[: len(rows)]).tolist():
            objects.pop(int(rows[index]), None)

    def _queue(
        self,
        rows: _Ints,
        epochs: _Ints,
        features: npt.NDArray[np.float32],
        now: float | None,
    ) -> int:
        count = len(rows)
        if not count:
            return 0
        if len(epochs) != count or len(features) != count:
            raise ValueError(f"{count} rows, {len(epochs)} epochs, {len(features)} features")
        arrived = time.monotonic() if now is None else now
        if len(self._taken) < count:
            self._taken = np.empty(2 * count, np.bool_)
        rows = np.ascontiguousarray(rows, np.int64)
        epochs = np.ascontiguousarray(epochs, np.int64)
        features = np.ascontiguousarray(features, np.float32)
        while True:
            accepted: int = _conflation.submit_block(
                rows, epochs, features, float(arrived), self._decided, self._epoch,
                self._order, self._arrived, self.features, self._queue_rows,
                self._queue_order, self._counters, self._taken, _conflation.NO_SKIP,
            )  # fmt: skip
            if accepted >= 0:
                return accepted
            self._grow_queue(count)

    def _grow_queue(self, count: int) -> None:
        """A queue with room for its live entries and `count` more (by doubling)."""
        counters = self._counters
        head, tail = int(counters[HEAD]), int(counters[TAIL])
        live = tail - head
        size = max(2 * len(self._queue_rows), 2 * (live + count))
        rows, order = np.zeros(size, np.int64), np.zeros(size, np.int64)
        rows[:live], order[:live] = self._queue_rows[head:tail], self._queue_order[head:tail]
        self._queue_rows, self._queue_order = rows, order
        counters[HEAD], counters[TAIL] = 0, live

    def reserve(self, rows: int) -> None:
        """Room in `features` and the per-row state for `rows` memory rows (by doubling)."""
        if rows > len(self.features):
            self.features = grown(self.features, rows)  # type: ignore[assignment]
        if rows > len(self._decided):
            self._decided = grown(self._decided, rows, -1)  # type: ignore[assignment]
            self._epoch = grown(self._epoch, rows)  # type: ignore[assignment]
            self._order = grown(self._order, rows)  # type: ignore[assignment]
            self._arrived = grown(self._arrived, rows)  # type: ignore[assignment]

    def rows_of(self, worker_id: str) -> list[int]:
        """The memory rows of `worker_id`'s slots (none before its first signal)."""
        return list(self._slots.get(worker_id, {}).values())

    def deadline(self) -> float | None:
        """When the oldest pending signal's wait runs out; None when nothing is pending."""
        counters = self._counters
        if not counters[PENDING]:
            return None
        oldest = self._queue_rows[counters[HEAD]]
        return float(self._arrived[oldest]) + self.max_wait_s

    def ready(self, now: float | None = None) -> bool:
        """True when a full batch is pending or the oldest signal has waited long enough."""
        if self._counters[PENDING] >= self.max_batch:
            return True
        deadline = self.deadline()
        if deadline is None:
            return False
        return (time.monotonic() if now is None else now) >= deadline

    def take(self, now: float | None = None, *, force: bool = False) -> PendingBatch:
        """The next batch (oldest first, at most `max_batch`) when ready or forced, else an
        empty one."""
        if not (force or self.ready(now)):
            return PendingBatch.empty(self.names)
        count = _conflation.take_batch(
            self.max_batch,
            self._decided,
            self._epoch,
            self._order,
            self._queue_rows,
            self._queue_order,
            self._counters,
            self._out_rows,
            self._out_epochs,
            self._arrived,
            self._out_arrived,
        )
        rows = self._out_rows[:count].copy()
        signals = None
        if self._objects:
            objects = self._objects
            signals = {row: objects.pop(row) for row in rows.tolist() if row in objects}
        return PendingBatch(
            self.names,
            rows,
            self._out_epochs[:count].copy(),
            self._out_arrived[:count].copy(),
            signals,
        )

    def forget(self, worker_id: str) -> None:
        """Drop what is pending or decided for `worker_id`: it restarted, epochs begin anew.

        Its memory rows stay its own (the policy resets their memory).
        """
        rows = self.rows_of(worker_id)
        if not rows:
            return
        order = self._order
        self._counters[PENDING] -= int(np.count_nonzero(order[rows]))
        order[rows] = 0
        self._decided[rows] = -1
        for row in rows:
            self._objects.pop(row, None)
        _conflation.skip_ended(order, self._queue_rows, self._queue_order, self._counters)
