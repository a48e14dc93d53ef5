"""A columnar receive's block of fast signals to the batcher: keys, unknown and busy slots.

What the controller does with each drained `SignalColumns` block, kept apart from the
controller so that bench inference feeds the loop through exactly this path. Every step is
over the block at once: the slot names by one index of a name array, the keys by one `zip`,
unknown slots found by one comparison and busy ones by one `isdisjoint` (filtered row by row
only when some slot of the block awaits an ack).
"""

from __future__ import annotations

from collections.abc import Callable, Set

import numpy as np
import numpy.typing as npt

from bus.columnar import SignalColumns
from services.controller.batcher import SlotKey

SubmitRows = Callable[[list[SlotKey], npt.NDArray[np.int64], npt.NDArray[np.float32]], int]


class SignalIntake:
    """Queues a block's rows for the known slots not awaiting an ack (`submit_rows`).

    `busy` is the live set of (worker, slot)s with a command in flight; `unknown` counts
    rows for a slot index the topology does not have (never decided).
    """

    def __init__(self, slots: tuple[str, ...], busy: Set[SlotKey], submit_rows: SubmitRows) -> None:
        self._names = np.array(slots, dtype=object)
        self._busy = busy
        self._submit_rows = submit_rows
        self.unknown = 0

    def __call__(self, block: SignalColumns) -> list[int]:
        """Queue `block`; the slot indices of its rows for an unknown slot (for the log)."""
        count = len(block)
        if not count:
            return []
        slot_index = block.slot_index
        senders = block.senders()
        epochs, features = block.epoch, block.features
        unknown: list[int] = []
        if int(slot_index.max()) >= len(self._names):  # the index is a non-negative byte
            known = slot_index < len(self._names)
            unknown = slot_index[~known].tolist()
            self.unknown += len(unknown)
            taken = np.flatnonzero(known)
            senders = [senders[i] for i in taken.tolist()]
            slot_index, epochs, features = slot_index[taken], epochs[taken], features[taken]
        keys = list(zip(senders, self._names[slot_index].tolist(), strict=True))
        busy = self._busy
        if busy and not busy.isdisjoint(keys):  # a slot awaiting an ack is not decided again
            free = [i for i, key in enumerate(keys) if key not in busy]
            keys = [keys[i] for i in free]
            epochs, features = epochs[free], features[free]
        if keys:
            self._submit_rows(keys, epochs, features)
        return unknown
