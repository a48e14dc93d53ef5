"""The decisions of the inference loop, kept as columns and built as objects only when read.

Profiled at B = 256, one `Decision` object per row was a fifth of the loop's own time,
though the controller reads only the rows that carry a command: `commanded()` builds those
alone, and any other reader sees an ordinary sequence of `Decision`s.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator, Sequence
from itertools import compress
from typing import overload

import msgspec

from leyline import AdaptationCommand
from services.controller.batcher import PendingSignal
from services.controller.policy import DecisionReason

_REASONS = {int(reason): reason for reason in DecisionReason}


class Decision(msgspec.Struct, frozen=True, gc=False):
    """The policy's choice for one (worker, slot) at one epoch; WAIT carries no command."""

    worker_id: str
    slot_id: str
    epoch: int
    action: enum.IntEnum
    confidence: float
    reason: DecisionReason
    command: AdaptationCommand | None


class Decisions(Sequence[Decision]):
    """Rows of decided signals, in batch order: action index, confidence, reason, command."""

    __slots__ = ("_actions", "_commands", "_confidence", "_items", "_members", "_reasons")

    def __init__(
        self,
        members: tuple[enum.IntEnum, ...],
        items: list[PendingSignal] | None = None,
        actions: list[int] | None = None,
        confidence: list[float] | None = None,
        reasons: list[int] | None = None,
        commands: list[AdaptationCommand | None] | None = None,
    ) -> None:
        self._members = members
        self._items = items or []
        self._actions = actions or []
        self._confidence = confidence or []
        self._reasons = reasons or []
        self._commands = commands or []

    def extend(self, other: Decisions) -> None:
        """Append another batch's rows (the loop's `step` joins its batches so)."""
        self._items += other._items
        self._actions += other._actions
        self._confidence += other._confidence
        self._reasons += other._reasons
        self._commands += other._commands

    def commanded(self) -> list[Decision]:
        """The decisions that carry a command, in order: all the controller has to send."""
        return [self._row(row) for row in compress(range(len(self)), self._commands)]

    def _row(self, row: int) -> Decision:
        item = self._items[row]
        return Decision(
            item.worker_id,
            item.slot_id,
            item.epoch,
            self._members[self._actions[row]],
            self._confidence[row],
            _REASONS[self._reasons[row]],
            self._commands[row],
        )

    def __len__(self) -> int:
        return len(self._items)

    @overload
    def __getitem__(self, index: int) -> Decision: ...

    @overload
    def __getitem__(self, index: slice) -> list[Decision]: ...

    def __getitem__(self, index: int | slice) -> Decision | list[Decision]:
        if isinstance(index, slice):
            return [self._row(row) for row in range(len(self))[index]]
        return self._row(range(len(self))[index])

    def __iter__(self) -> Iterator[Decision]:
        return map(self._row, range(len(self)))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Decisions | list | tuple):
            return list(self) == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # mutable (extend), compared by value
