"""A columnar receive's block of fast signals to the batcher: rows, unknown and busy slots.

What the controller does with each drained `SignalColumns` block, kept apart from the
controller so that bench inference feeds the loop through exactly this path. Each sender
gets a number once; a table of (sender number, slot index) to memory row then finds the
whole block's rows, and queues them, in one compiled pass (`SignalBatcher.submit_paired`),
so the Python work is one dict lookup per frame (group of rows), not a key per row. Slots
awaiting an ack are passed over in the same pass, by their memory rows' marks. A block
with a pair seen for the first time, or an unknown slot index, takes a slower way once:
the new pairs get their memory rows, the unknown slot indices are counted and the rest
queued by row (`SignalBatcher.submit_block`).
"""

from __future__ import annotations

from collections.abc import Set

import numpy as np
import numpy.typing as npt

from bus.columnar import SignalColumns
from services.controller.batcher import SignalBatcher
from services.controller.pending import SlotKey, grown


class SignalIntake:
    """Queues a block's rows for the known slots not awaiting an ack.

    `busy` is the live set of (worker, slot)s with a command in flight; `unknown` counts
    rows for a slot index the topology does not have (never decided).
    """

    def __init__(self, slots: tuple[str, ...], busy: Set[SlotKey], batcher: SignalBatcher) -> None:
        self._slots = slots
        self._width = len(slots)
        self._busy = busy
        self._batcher = batcher
        #: A number per sender, in order of first sight, and the senders by number.
        self._numbers: dict[str, int] = {}
        self._lookup = self._numbers.__getitem__
        self._senders: list[str] = []
        #: [senders, slots] memory rows; -1 before the batcher gave the pair one.
        self._table = np.full((16, max(self._width, 1)), -1, np.int64)
        #: Per memory row: set while its slot awaits an ack (only during a call).
        self._marks = np.zeros(64, np.bool_)
        #: Each row's memory row, as the pass finds them.
        self._rows = np.empty(64, np.int64)
        self.unknown = 0

    def __call__(self, block: SignalColumns) -> list[int]:
        """Queue `block`; the slot indices of its rows for an unknown slot (for the log)."""
        count = len(block)
        if not count:
            return []
        if len(self._rows) < count:
            self._rows = np.empty(2 * count, np.int64)
        senders = self._sender_numbers(block.group_senders)
        slot_index = np.ascontiguousarray(block.slot_index, np.int64)
        self._mark_room()
        busy = self._busy_rows() if self._busy else None
        try:
            if self._batcher.submit_paired(
                self._table, senders, block.group_starts, slot_index, self._marks,
                block.epoch, block.features, self._rows,
            ) >= 0:  # fmt: skip
                return []
            return self._first_sight(block, senders, slot_index)
        finally:
            if busy:
                self._marks[busy] = False

    def _busy_rows(self) -> list[int]:
        """The memory rows of the slots awaiting an ack, marked for the pass."""
        known = self._batcher.rows
        busy = [row for row in map(known.get, self._busy) if row is not None]
        self._marks[busy] = True
        return busy

    def _mark_room(self) -> None:
        """A mark for every memory row the batcher has given (the pass reads the marks of
        the rows it finds), the marks set so far kept."""
        if len(self._marks) < len(self._batcher.rows):
            self._marks = grown(self._marks, len(self._batcher.rows))  # type: ignore[assignment]

    def _first_sight(
        self,
        block: SignalColumns,
        senders: npt.NDArray[np.int64],
        slot_index: npt.NDArray[np.int64],
    ) -> list[int]:
        """Queue a block with a pair seen for the first time or an unknown slot index: the
        new pairs get memory rows, the unknown slots are counted and left out."""
        count = len(block)
        rows = self._rows[:count]
        known = slot_index < self._width
        unknown: list[int] = []
        if not known.all():
            unknown = slot_index[~known].tolist()
            self.unknown += len(unknown)
        self._new_rows(
            rows, np.repeat(senders, np.diff(block.group_starts, append=count)), slot_index
        )
        self._mark_room()
        busy = self._busy_rows() if self._busy else []  # a new pair may be one of them
        free = known & ~self._marks[np.where(known, rows, 0)]
        self._marks[busy] = False
        taken = np.flatnonzero(free)
        if len(taken):
            self._batcher.submit_block(rows[taken], block.epoch[taken], block.features[taken])
        return unknown

    def _sender_numbers(self, senders: list[str]) -> npt.NDArray[np.int64]:
        """Each group's (frame's) sender number: one lookup per group, in C."""
        try:
            return np.fromiter(map(self._lookup, senders), np.int64, len(senders))
        except KeyError:  # a sender seen for the first time
            return np.array([self._number(sender) for sender in senders], np.int64)

    def _number(self, sender: str) -> int:
        number = self._numbers.get(sender)
        if number is None:
            number = self._numbers[sender] = len(self._senders)
            self._senders.append(sender)
            if number >= len(self._table):
                grown = np.full((2 * len(self._table), self._table.shape[1]), -1, np.int64)
                grown[: len(self._table)] = self._table
                self._table = grown
        return number

    def _new_rows(
        self,
        rows: npt.NDArray[np.int64],
        senders: npt.NDArray[np.int64],
        slot_index: npt.NDArray[np.int64],
    ) -> None:
        """Fill in `rows` for the known slots whose pair is seen for the first time (each
        gets its memory row from the batcher)."""
        for index in np.flatnonzero((rows < 0) & (slot_index < self._width)).tolist():
            sender, slot = int(senders[index]), int(slot_index[index])
            row = self._batcher.row(self._senders[sender], self._slots[slot])
            rows[index] = self._table[sender, slot] = row
