"""A columnar receive's block of fast signals to the batcher: rows, unknown and busy slots.

What the controller does with each drained `SignalColumns` block, kept apart from the
controller so that bench inference feeds the loop through exactly this path. Each sender
gets a number once; a table of (sender number, slot index) to memory row then finds the
whole block's rows in one compiled pass (`block_rows`), so the Python work is one dict
lookup per frame (group of rows), not a key per row. Unknown slot indices come out of the
same pass; busy slots are found through the memory rows of the slots in flight (filtered
only when some slot of the block awaits an ack); the block goes to the batcher by memory
rows (`SignalBatcher.submit_block`).
"""

from __future__ import annotations

from collections.abc import Set

import numpy as np
import numpy.typing as npt

from bus.columnar import SignalColumns
from services.controller._host_passes import block_rows
from services.controller.batcher import SignalBatcher
from services.controller.pending import SlotKey


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
        self._marks = np.zeros(64, np.bool_)
        self.unknown = 0

    def __call__(self, block: SignalColumns) -> list[int]:
        """Queue `block`; the slot indices of its rows for an unknown slot (for the log)."""
        count = len(block)
        if not count:
            return []
        slot_index = np.ascontiguousarray(block.slot_index, np.int64)
        senders = self._sender_numbers(block.group_senders)
        starts = block.group_starts
        rows = np.empty(count, np.int64)
        epochs, features = block.epoch, block.features
        unknown: list[int] = []
        if block_rows(senders, starts, slot_index, self._table, rows) < 0:
            known = slot_index < self._width
            if not known.all():
                unknown = slot_index[~known].tolist()
                self.unknown += len(unknown)
            self._new_rows(rows, np.repeat(senders, np.diff(starts, append=count)), slot_index)
            if unknown:
                taken = np.flatnonzero(known)
                rows, epochs, features = rows[taken], epochs[taken], features[taken]
        if self._busy:
            free = self._free(rows)
            if free is not None:
                rows, epochs, features = rows[free], epochs[free], features[free]
        if len(rows):
            self._batcher.submit_block(rows, epochs, features)
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

    def _free(self, rows: npt.NDArray[np.int64]) -> npt.NDArray[np.intp] | None:
        """The positions of `rows` whose slot awaits no ack; None when every one is free."""
        known = self._batcher.rows
        busy = [row for row in map(known.get, self._busy) if row is not None]
        if not busy:
            return None
        marks = self._marks
        if len(marks) < len(known):
            marks = self._marks = np.zeros(2 * len(known), np.bool_)
        marks[busy] = True
        hit = marks[rows]
        marks[busy] = False
        if not hit.any():
            return None
        return np.flatnonzero(~hit)
