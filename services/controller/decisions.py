"""The decisions of the inference loop, kept as arrays; commands and objects made when read.

Profiled at B = 256, one `Decision` object per row was a fifth of the loop's own time and
one command object per acting row most of the rest, though the controller needs neither:
it reads the acting rows' commands as columns of encoded bytes (`commands()`), which the
journal numbers and the bus sends as they are. Any other reader sees an ordinary sequence
of `Decision`s, built on the way out.
"""

from __future__ import annotations

import enum

import msgspec
import numpy as np
import numpy.typing as npt

from leyline import AdaptationCommand
from services.controller.commands import CommandBatch, CommandEncoder
from services.controller.pending import PendingBatch, RowNames
from services.controller.policy import DecisionReason
from services.controller.rows import ColumnSequence

_REASONS = {int(reason): reason for reason in DecisionReason}
_NOTHING = PendingBatch.empty(RowNames())


class Decision(msgspec.Struct, frozen=True, gc=False):
    """The policy's choice for one (worker, slot) at one epoch; WAIT carries no command.

    `command` is unnumbered (sequence 0): the journal numbers it when it is issued.
    """

    worker_id: str
    slot_id: str
    epoch: int
    action: enum.IntEnum
    confidence: float
    reason: DecisionReason
    command: AdaptationCommand | None


class Decisions(ColumnSequence[Decision]):
    """Rows of decided signals, in batch order: action index, confidence, reason code.

    `actions` and `reasons` are int64, `confidence` float64 in [0, 1], one entry per row.
    """

    __slots__ = ("_by_row", "_commands", "_encoder", "_items", "_members", "actions",
                 "confidence", "reasons")  # fmt: skip

    def __init__(
        self,
        members: tuple[enum.IntEnum, ...],
        encoder: CommandEncoder,
        items: PendingBatch | None = None,
        actions: npt.NDArray[np.int64] | None = None,
        confidence: npt.NDArray[np.float64] | None = None,
        reasons: npt.NDArray[np.int64] | None = None,
    ) -> None:
        self._members = members
        self._encoder = encoder
        self._items = _NOTHING if items is None else items
        self.actions = np.empty(0, np.int64) if actions is None else actions
        self.confidence = np.empty(0, np.float64) if confidence is None else confidence
        self.reasons = np.empty(0, np.int64) if reasons is None else reasons
        self._commands: CommandBatch | None = None
        self._by_row: dict[int, int] | None = None

    @property
    def pending(self) -> PendingBatch:
        """The decided signals, one per row, in row order (as arrays)."""
        return self._items

    @classmethod
    def join(
        cls, members: tuple[enum.IntEnum, ...], encoder: CommandEncoder, parts: list[Decisions]
    ) -> Decisions:
        """One `Decisions` of several batches' rows, in order (a `step` that took several)."""
        if len(parts) == 1:
            return parts[0]
        if not parts:
            return cls(members, encoder)
        return cls(
            members,
            encoder,
            PendingBatch.join([part._items for part in parts]),
            np.concatenate([part.actions for part in parts]),
            np.concatenate([part.confidence for part in parts]),
            np.concatenate([part.reasons for part in parts]),
        )

    def commands(self) -> CommandBatch:
        """The commands of the rows whose action is not WAIT, in row order (made once)."""
        if self._commands is None:
            self._commands = self._encoder.commands(
                self._items, self.actions, self.reasons, self.confidence
            )
        return self._commands

    def commanded(self) -> list[Decision]:
        """The decisions that carry a command, in order, as objects."""
        return [self._item(row) for row in self.commands().rows.tolist()]

    def _item(self, row: int) -> Decision:
        item = self._items[row]
        action = int(self.actions[row])
        command = None
        if action != self._encoder.wait:
            commands = self.commands()
            if self._by_row is None:
                self._by_row = {r: i for i, r in enumerate(commands.rows.tolist())}
            command = commands.command(self._by_row[row])
        return Decision(
            item.worker_id,
            item.slot_id,
            item.epoch,
            self._members[action],
            float(self.confidence[row]),
            _REASONS[int(self.reasons[row])],
            command,
        )

    def __len__(self) -> int:
        return len(self._items)
