"""Freshest-wins conflation of fast signals and the micro-batching clock, with no threads.

Signals are keyed by (worker, slot). A newer signal replaces the pending one in place, so it
keeps the queue position and the arrival time of the first (a busy slot cannot starve the
batch). A signal no newer than one already pending, or already decided, is stale and dropped.
Time is whatever clock the caller passes (`time.monotonic()` by default), so tests drive it.

Signals come as objects (`submit`, `submit_many`) or as rows of a columnar receive
(`submit_rows`, `bus.columnar.SignalColumns`): a row's raw features go straight into the
batcher's feature table at its slot's memory row, so no per-signal object is decoded; the
pending entry then holds its epoch and row only.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from itertools import islice, repeat
from operator import attrgetter, itemgetter
from typing import cast

import msgspec
import numpy as np
import numpy.typing as npt

from leyline import FastTrainingSignals
from leyline.signals import TENSOR_SCHEMA_SIZE

SlotKey = tuple[str, str]


class PendingSignal(msgspec.Struct, frozen=True, gc=False):
    """The freshest signal of one (worker, slot) waiting for a decision, and when it came.

    A msgspec Struct rather than a NamedTuple: built once per signal, its C constructor
    costs a third as much (bench inference).
    """

    worker_id: str
    slot_id: str
    #: The signal as an object; None when it came as a row (its features are in the
    #: batcher's `features` table, at `row`).
    signal: FastTrainingSignals | None
    arrived: float
    #: The (worker, slot)'s memory row: fixed from its first signal on, kept across `forget`.
    row: int = 0
    epoch: int = 0


#: Read one field of each item of a batch in C (`map`), not in a Python comprehension.
pending_rows = attrgetter("row")
pending_signals = attrgetter("signal")
pending_epochs = attrgetter("epoch")
_worker, _slot = itemgetter(0), itemgetter(1)
#: What a slot never decided (or forgotten) compares as: every epoch is newer.
_NEVER_DECIDED = PendingSignal("", "", None, 0.0, 0, -1)


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
        #: The pending signal per (worker, slot), by its memory row: after the one lookup
        #: of a key's row, every step hashes an int, not a tuple of two strings.
        self._pending: dict[int, PendingSignal] = {}
        #: The last signal decided per (worker, slot), by memory row: no newer one is stale.
        self._decided: dict[int, PendingSignal] = {}
        #: A memory row per (worker, slot) ever seen, in order of first arrival.
        self.rows: dict[SlotKey, int] = {}
        #: The slots seen of each worker and their rows, so forgetting one worker touches
        #: only its own keys.
        self._slots: dict[str, dict[str, int]] = {}
        #: The raw features [rows, 27] of each memory row's latest signal that came as a row.
        self.features = np.zeros((64, TENSOR_SCHEMA_SIZE), np.float32)
        self.accepted = 0
        self.conflated = 0
        self.stale = 0

    def __len__(self) -> int:
        return len(self._pending)

    def submit(
        self,
        worker_id: str,
        slot_id: str,
        signal: FastTrainingSignals,
        now: float | None = None,
    ) -> bool:
        """Queue `signal` for its slot; False when it is stale and was dropped.

        `submit_many`'s rule for one signal, written out: through `submit_many` a lone
        signal cost three times as much (bench stress submits one at a time); a test holds
        the two equal.
        """
        key = (worker_id, slot_id)
        row = self.rows.get(key)
        if row is None:  # never seen: nothing pending or decided, so accepted below
            row = self._new_row(key)
        epoch = signal.epoch
        last = self._decided.get(row)
        if last is not None and epoch <= last.epoch:
            self.stale += 1
            return False
        held = self._pending.get(row)
        if held is None:
            arrived = time.monotonic() if now is None else now
            self._pending[row] = PendingSignal(worker_id, slot_id, signal, arrived, row, epoch)
        elif epoch >= held.epoch:
            self._pending[row] = PendingSignal(worker_id, slot_id, signal, held.arrived, row, epoch)
            self.conflated += 1
        else:
            self.stale += 1
            return False
        self.accepted += 1
        return True

    def submit_many(
        self,
        keys: Iterable[SlotKey],
        signals: Iterable[FastTrainingSignals],
        now: float | None = None,
    ) -> int:
        """Queue a block of signals (one drained receive) in order; how many were accepted.

        One call for the block: its state is bound once and the clock read once, which was
        most of a signal's cost when each came in its own call (bench inference). The rules
        are `submit`'s, applied one signal after the other.
        """
        arrived = time.monotonic() if now is None else now
        held = list(signals)
        accepted, _ = self._queue_each(list(keys), [s.epoch for s in held], held, arrived)
        return accepted

    def submit_rows(
        self,
        keys: list[SlotKey],
        epochs: npt.NDArray[np.int64] | list[int],
        features: npt.NDArray[np.float32],
        now: float | None = None,
    ) -> int:
        """Queue a block of signals that came as rows: `features[i]` [27] is the raw feature
        block of the signal of `keys[i]` at `epochs[i]`; how many were accepted.

        `submit_many`'s rules; the accepted rows' features are copied into `features` at
        their memory rows in one step (a slot's later row in the block wins, as it would
        replace the earlier one), so the block's buffer may be reused afterwards. The common
        block (every slot seen before, none pending, none twice) is decided at once: each
        row is fresh exactly when its epoch is past its slot's last decided one; any other
        goes row by row (`_submit_rows_one_by_one`).
        """
        arrived = time.monotonic() if now is None else now
        count = len(keys)
        pending, rows = self._pending, self.rows
        if not count:
            return 0
        found = list(map(rows.get, keys))
        if None in found:
            return self._submit_rows_one_by_one(keys, epochs, features, arrived)
        memory = cast(list[int], found)
        if not pending.keys().isdisjoint(memory) or len(set(memory)) < count:
            return self._submit_rows_one_by_one(keys, epochs, features, arrived)
        epoch = np.asarray(epochs, np.int64)
        decided = map(self._decided.get, memory, repeat(_NEVER_DECIDED))
        last = np.fromiter(map(pending_epochs, decided), np.int64, count)
        fresh = epoch > last
        if fresh.all():
            taken, taken_rows, taken_epochs = keys, memory, epoch.tolist()
        else:
            index = np.flatnonzero(fresh)
            taken = [keys[i] for i in index.tolist()]
            taken_rows = [memory[i] for i in index.tolist()]
            taken_epochs = epoch[index].tolist()
            features = features[index]
        accepted = len(taken)
        if accepted:
            pending.update(
                zip(
                    taken_rows,
                    map(PendingSignal, map(_worker, taken), map(_slot, taken), repeat(None),
                        repeat(arrived), taken_rows, taken_epochs),
                    strict=True,
                )
            )  # fmt: skip
            self.reserve(len(rows))  # rows first seen as objects may have no room yet
            self.features[taken_rows] = features
        self.accepted += accepted
        self.stale += count - accepted
        return accepted

    def _submit_rows_one_by_one(
        self,
        keys: list[SlotKey],
        epochs: npt.NDArray[np.int64] | list[int],
        features: npt.NDArray[np.float32],
        arrived: float,
    ) -> int:
        """`submit_rows` for any block: `submit_many`'s rules applied one row after the other."""
        epoch_list = epochs.tolist() if isinstance(epochs, np.ndarray) else epochs
        accepted, source = self._queue_each(keys, epoch_list, [None] * len(keys), arrived)
        if source:
            self.reserve(len(self.rows))
            self.features[list(source)] = features[list(source.values())]
        return accepted

    def _queue_each(
        self,
        keys: list[SlotKey],
        epochs: list[int],
        signals: list[FastTrainingSignals] | list[None],
        arrived: float,
    ) -> tuple[int, dict[int, int]]:
        """The rules applied one signal after the other: how many were accepted, and each
        accepted memory row's index in the block (a later signal of the same slot wins)."""
        pending, decided, rows = self._pending, self._decided, self.rows
        get_decided, get_held, get_row = decided.get, pending.get, rows.get
        accepted = stale = conflated = 0
        source: dict[int, int] = {}
        for index, (key, epoch, signal) in enumerate(zip(keys, epochs, signals, strict=True)):
            row = get_row(key)
            if row is None:
                row = self._new_row(key)
            last = get_decided(row)
            if last is not None and epoch <= last.epoch:
                stale += 1
                continue
            held = get_held(row)
            if held is None:
                pending[row] = PendingSignal(key[0], key[1], signal, arrived, row, epoch)
            elif epoch >= held.epoch:
                pending[row] = PendingSignal(key[0], key[1], signal, held.arrived, row, epoch)
                conflated += 1
            else:
                stale += 1
                continue
            source[row] = index
            accepted += 1
        self.accepted += accepted
        self.stale += stale
        self.conflated += conflated
        return accepted, source

    def reserve(self, rows: int) -> None:
        """Room in `features` for `rows` memory rows (grown by doubling)."""
        if rows > len(self.features):
            grown = np.zeros((max(rows, 2 * len(self.features)), TENSOR_SCHEMA_SIZE), np.float32)
            grown[: len(self.features)] = self.features
            self.features = grown

    def _new_row(self, key: SlotKey) -> int:
        """The next free memory row, now `key`'s for good."""
        row = self.rows[key] = len(self.rows)
        self._slots.setdefault(key[0], {})[key[1]] = row
        return row

    def rows_of(self, worker_id: str) -> list[int]:
        """The memory rows of `worker_id`'s slots (none before its first signal)."""
        return list(self._slots.get(worker_id, {}).values())

    def deadline(self) -> float | None:
        """When the oldest pending signal's wait runs out; None when nothing is pending."""
        oldest = next(iter(self._pending.values()), None)
        return None if oldest is None else oldest.arrived + self.max_wait_s

    def ready(self, now: float | None = None) -> bool:
        """True when a full batch is pending or the oldest signal has waited long enough."""
        if len(self._pending) >= self.max_batch:
            return True
        deadline = self.deadline()
        if deadline is None:
            return False
        return (time.monotonic() if now is None else now) >= deadline

    def take(self, now: float | None = None, *, force: bool = False) -> list[PendingSignal]:
        """The next batch (oldest first, at most `max_batch`) when ready or forced, else []."""
        if not (force or self.ready(now)):
            return []
        pending = self._pending
        if len(pending) <= self.max_batch:  # all of it: taken and cleared in C, not one by one
            batch = list(pending.values())
            self._decided.update(pending)
            pending.clear()
        else:
            rows = list(islice(pending, self.max_batch))
            batch = [pending.pop(row) for row in rows]
            self._decided.update(zip(rows, batch, strict=True))
        return batch

    def forget(self, worker_id: str) -> None:
        """Drop what is pending or decided for `worker_id`: it restarted, epochs begin anew.

        Its memory rows stay its own (the policy resets their memory).
        """
        for row in self._slots.get(worker_id, {}).values():
            self._pending.pop(row, None)
            self._decided.pop(row, None)
