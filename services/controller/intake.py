"""A columnar receive's block of fast signals to the batcher: rows, unknown and busy slots.

What the controller does with each drained `SignalColumns` block, kept apart from the
controller so that bench inference feeds the loop through exactly this path. Each sender
gets a number once; a table of (sender number, slot index) to memory row then finds the
whole block's rows in one index, so the Python work is one dict lookup per frame (group of
rows), not a key per row. Unknown slots are found by one comparison, busy ones through the
memory rows of the slots in flight (filtered only when some slot of the block awaits an
ack), and the block goes to the batcher by memory rows (`SignalBatcher.submit_block`).
"""

from __future__ import annotations

from collections.abc import Set
from operator import attrgetter

import numpy as np
import numpy.typing as npt

from bus.columnar import SignalColumns
from services.controller.batcher import SignalBatcher, SlotKey

_sender = attrgetter("sender")
_sequences = attrgetter("sequences")


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
        slot_index, epochs, features = block.slot_index, block.epoch, block.features
        senders = self._sender_numbers(block)
        unknown: list[int] = []
        if int(slot_index.max()) >= self._width:  # the index is a non-negative byte
            known = slot_index < self._width
            unknown = slot_index[~known].tolist()
            self.unknown += len(unknown)
            taken = np.flatnonzero(known)
            senders, slot_index = senders[taken], slot_index[taken]
            epochs, features = epochs[taken], features[taken]
            if not len(taken):
                return unknown
        rows = self._table[senders, slot_index]
        if int(rows.min()) < 0:
            rows = self._new_rows(rows, senders, slot_index)
        if self._busy:
            free = self._free(rows)
            if free is not None:
                rows, epochs, features = rows[free], epochs[free], features[free]
        if len(rows):
            self._batcher.submit_block(rows, epochs, features)
        return unknown

    def _sender_numbers(self, block: SignalColumns) -> npt.NDArray[np.int64]:
        """Each row's sender number: one lookup per group of rows (a frame), then repeated."""
        groups = block.groups
        names = list(map(_sender, groups))
        found = list(map(self._numbers.get, names))
        if None in found:
            found = [self._number(name) for name in names]
        numbers = np.array(found, np.int64)
        if len(groups) == len(block):
            return numbers
        lengths = np.fromiter(map(len, map(_sequences, groups)), np.int64, len(groups))
        return np.repeat(numbers, lengths)

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
    ) -> npt.NDArray[np.int64]:
        """`rows` with the pairs seen for the first time given their memory rows."""
        for index in np.flatnonzero(rows < 0).tolist():
            sender, slot = int(senders[index]), int(slot_index[index])
            row = self._batcher.row(self._senders[sender], self._slots[slot])
            self._table[sender, slot] = row
        return self._table[senders, slot_index]

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
