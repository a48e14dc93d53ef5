"""What the batcher holds and hands out, by memory row: names, taken batches, their items.

Each (worker, slot) gets a memory row at its first signal, for good; the batcher keeps its
state as arrays over those rows. This module names the rows (`RowNames`, `SlotCodes`) and
holds a taken batch as arrays (`PendingBatch`), building a `PendingSignal` only for a reader
of one item.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import msgspec
import numpy as np
import numpy.typing as npt

from leyline import FastTrainingSignals
from services.controller.rows import ColumnSequence

SlotKey = tuple[str, str]
_Ints = npt.NDArray[np.int64]


class PendingSignal(msgspec.Struct, frozen=True, gc=False):
    """One signal of a taken batch, as an object: for readers of single items (a refusal
    handler, tests); the loop itself reads the batch's arrays."""

    worker_id: str
    slot_id: str
    #: The signal as an object; None when it came as a row (its features are in the
    #: batcher's `features` table, at `row`).
    signal: FastTrainingSignals | None
    arrived: float
    #: The (worker, slot)'s memory row: fixed from its first signal on, kept across `forget`.
    row: int = 0
    epoch: int = 0


class SlotCodes:
    """A small integer per slot name, in order of first use: for tables indexed by slot
    (the command templates); shared by the batcher's rows and the command encoder."""

    __slots__ = ("_codes", "names")

    def __init__(self) -> None:
        self._codes: dict[str, int] = {}
        self.names: list[str] = []

    def code(self, slot_id: str) -> int:
        code = self._codes.get(slot_id)
        if code is None:
            code = self._codes[slot_id] = len(self.names)
            self.names.append(slot_id)
        return code

    def codes(self, slot_ids: Iterable[str]) -> _Ints:
        return np.array([self.code(slot_id) for slot_id in slot_ids], np.int64)


class RowNames:
    """Who each memory row belongs to: worker and slot names, and each row's slot code."""

    __slots__ = ("codes", "slot_code", "slots", "workers")

    def __init__(self) -> None:
        self.workers: list[str] = []
        self.slots: list[str] = []
        self.codes = SlotCodes()
        #: Each row's slot code (`codes`), grown with the rows.
        self.slot_code = np.zeros(64, np.int64)

    def add(self, worker_id: str, slot_id: str) -> None:
        row = len(self.workers)
        self.workers.append(worker_id)
        self.slots.append(slot_id)
        if row >= len(self.slot_code):
            self.slot_code = grown(self.slot_code, row + 1)  # type: ignore[assignment]
        self.slot_code[row] = self.codes.code(slot_id)


class PendingBatch(ColumnSequence[PendingSignal]):
    """A taken batch as arrays, oldest first: memory rows, epochs and arrival times [n].

    Items are built as `PendingSignal`s only when read; `worker_ids()` and `slot_ids()`
    give the names as columns.
    """

    __slots__ = ("_names", "_signals", "arrived", "epochs", "rows")

    def __init__(
        self,
        names: RowNames,
        rows: _Ints,
        epochs: _Ints,
        arrived: npt.NDArray[np.float64],
        signals: dict[int, FastTrainingSignals] | None = None,
    ) -> None:
        self._names = names
        self.rows = rows
        self.epochs = epochs
        self.arrived = arrived
        #: The rows whose signal came as an object, and that object.
        self._signals = signals or {}

    @classmethod
    def empty(cls, names: RowNames) -> PendingBatch:
        return cls(names, _NO_ROWS, _NO_ROWS, np.empty(0, np.float64))

    @classmethod
    def join(cls, parts: Sequence[PendingBatch]) -> PendingBatch:
        """One batch of several batches' rows (one or more, of one batcher), in order."""
        signals: dict[int, FastTrainingSignals] = {}
        for part in parts:
            signals.update(part._signals)
        return cls(
            parts[0]._names,
            np.concatenate([part.rows for part in parts]),
            np.concatenate([part.epochs for part in parts]),
            np.concatenate([part.arrived for part in parts]),
            signals,
        )

    def keep(self, index: npt.NDArray[np.intp]) -> PendingBatch:
        """The items at positions `index`, in that order."""
        return PendingBatch(
            self._names, self.rows[index], self.epochs[index], self.arrived[index], self._signals
        )

    def worker_ids(self, rows: _Ints | None = None) -> list[str]:
        """The worker of each item (or of each of `rows`, memory rows)."""
        return list(map(self._names.workers.__getitem__, _listed(self.rows, rows)))

    def slot_ids(self, rows: _Ints | None = None) -> list[str]:
        """The slot of each item (or of each of `rows`, memory rows)."""
        return list(map(self._names.slots.__getitem__, _listed(self.rows, rows)))

    def slot_codes(self) -> _Ints:
        """Each item's slot code (`RowNames.slot_code`)."""
        return self._names.slot_code[self.rows]

    def __len__(self) -> int:
        return len(self.rows)

    def _item(self, index: int) -> PendingSignal:
        row = int(self.rows[index])
        names = self._names
        return PendingSignal(
            names.workers[row],
            names.slots[row],
            self._signals.get(row),
            float(self.arrived[index]),
            row,
            int(self.epochs[index]),
        )


def _listed(own: _Ints, rows: _Ints | None) -> list[int]:
    picked: list[int] = (own if rows is None else rows).tolist()
    return picked


def grown(array: npt.NDArray[np.generic], size: int, fill: int = 0) -> npt.NDArray[np.generic]:
    """`array` copied into one of at least `size` (and at least twice as long) rows, the
    new ones `fill`: the batcher's per-row arrays grow by doubling."""
    shape = (max(size, 2 * len(array)), *array.shape[1:])
    grown = np.full(shape, fill, array.dtype)
    grown[: len(array)] = array
    return grown


_NO_ROWS = np.empty(0, np.int64)
