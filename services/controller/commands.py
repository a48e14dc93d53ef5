"""The commands of a decision batch: counter ids, one clock read, cached validated templates.

Building a command from scratch per decision (`action_to_command`, a uuid4, `datetime.now`)
cost ~23 us of profiled time a command. Here a command is a copy of a template built once
per (action, reason, slot), stamped with a counter id, the batch's one timestamp and its
confidence; only the rows whose action is not WAIT get one.
"""

from __future__ import annotations

import enum
import secrets
from collections.abc import Sequence
from datetime import UTC, datetime

import msgspec

from leyline import AdaptationCommand
from leyline.actions import action_to_command
from services.controller.batcher import PendingSignal
from services.controller.layout import ActionLayout
from services.controller.policy import DecisionReason

_REASON_TEXT = {int(reason): reason.text for reason in DecisionReason}


class CommandIds:
    """Command ids unique across processes and machines at the cost of a counter step.

    Each instance draws a 64-bit random prefix once; ids are `<prefix>-<n>` for n = 1, 2, ...
    A restarted controller draws a new prefix, so it never repeats an id it issued before.
    """

    __slots__ = ("_issued", "prefix")

    def __init__(self) -> None:
        self.prefix = secrets.token_hex(8)
        self._issued = 0

    def take(self, count: int) -> list[str]:
        """The next `count` ids at once: a batch's ids without a call per id."""
        first, prefix = self._issued + 1, self.prefix
        self._issued += count
        return [f"{prefix}-{n}" for n in range(first, first + count)]


class CommandStamper:
    """Makes the commands of one decided batch, aligned with its rows (None for WAIT)."""

    def __init__(self, layout: ActionLayout) -> None:
        self._actions: tuple[enum.IntEnum, ...] = tuple(layout.actions)
        self._wait = layout.wait
        self._ids = CommandIds()
        self._templates: dict[tuple[int, int, str], AdaptationCommand] = {}

    def stamp(
        self,
        items: Sequence[PendingSignal],
        actions: Sequence[int],
        confidence: Sequence[float],
        reasons: Sequence[int],
    ) -> list[AdaptationCommand | None]:
        """One command per row whose action is not WAIT, the batch's one timestamp on each.

        A template is copied by the Struct's own `__copy__` and stamped by `force_setattr`:
        id, timestamp and confidence take no part in the cross-field rules its
        `__post_init__` checked, so rerunning them (as `msgspec.structs.replace` does) would
        triple the cost, and `copy.copy`'s dispatch costs twice the copy itself.
        """
        commands: list[AdaptationCommand | None] = [None] * len(items)
        wait = self._wait
        acting = [row for row, action in enumerate(actions) if action != wait]
        if not acting:
            return commands
        timestamp = datetime.now(UTC)  # one clock read for the whole batch
        templates = self._templates
        copy = AdaptationCommand.__copy__  # type: ignore[attr-defined]  # msgspec C method, unstubbed
        stamp = msgspec.structs.force_setattr
        for row, command_id in zip(acting, self._ids.take(len(acting)), strict=True):
            key = (actions[row], reasons[row], items[row].slot_id)
            template = templates.get(key) or self._template(key)
            command = copy(template)
            stamp(command, "command_id", command_id)
            stamp(command, "timestamp", timestamp)
            stamp(command, "confidence", confidence[row])
            commands[row] = command
        return commands

    def _template(self, key: tuple[int, int, str]) -> AdaptationCommand:
        """The cached, validated command of (action, reason, slot); its id is stamped over."""
        action, reason, slot_id = key
        command = action_to_command(
            self._actions[action],
            command_id="template",
            seed_id=None,
            slot_id=slot_id,
            reason=_REASON_TEXT[reason],
        )
        assert command is not None  # only WAIT has none, and WAIT never gets here
        self._templates[key] = command
        return command
