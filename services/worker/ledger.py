"""What the worker has answered: its ledger of commands, and commands refused at decode.

A command the bus refused while decoding never reaches the worker's handler, but the
controller journaled it and resends it until it is acknowledged. When the raw payload still
names its command id, type and journal sequence, the worker answers it REJECTED at its turn
in the sequence, so the controller settles it and later commands are not held behind it.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import msgspec

from bus import Rejection
from leyline import AckOutcome, AckReason, AdaptationCommand, CommandAck, CommandType
from leyline.wire import decode, encode
from services.worker import events
from services.worker.outcome import CommandOutcome

#: Acks kept to answer resent commands; commands older than this are acked DUPLICATE.
ACK_MEMORY = 4096
#: The longest command id the contract allows (`Ident`).
MAX_ID_LENGTH = 128


class RefusedCommand(msgspec.Struct, frozen=True, kw_only=True):
    """A command refused at decode, named by the few fields its payload still yields."""

    command_id: str
    command_type: CommandType
    sequence: int
    reason: AckReason
    detail: str

    def outcome(self, worker_id: str, epoch: int) -> CommandOutcome:
        """The REJECTED answer, with the decode refusal as its reason and detail."""
        failed = events.command_failed(self, None, None, self.reason, self.detail, epoch)
        return CommandOutcome(
            command_id=self.command_id,
            command_type=self.command_type,
            worker_id=worker_id,
            outcome=AckOutcome.REJECTED,
            epoch=epoch,
            reason=self.reason,
            detail=self.detail,
            events=[failed],
        )


class _CommandName(msgspec.Struct):
    """The fields that attribute a command, read leniently: everything else is ignored."""

    type: str = ""
    command_id: str = ""
    command_type: int = 0
    sequence: int = 0


_names = msgspec.msgpack.Decoder(_CommandName)
_COMMAND_TYPES = frozenset(int(kind) for kind in CommandType)
#: Any major of the command contract: an ack or a report sent on `cmd` is not a command.
_TAG_PREFIX = f"{AdaptationCommand.__name__}.v"


def attribute(rejection: Rejection) -> RefusedCommand | None:
    """The refused command `rejection` is about, or None when its payload cannot name one."""
    try:
        name = _names.decode(rejection.payload)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        return None
    named = name.type.startswith(_TAG_PREFIX) and 0 < len(name.command_id) <= MAX_ID_LENGTH
    if not named or name.command_type not in _COMMAND_TYPES or name.sequence < 1:
        return None
    return RefusedCommand(
        command_id=name.command_id,
        command_type=CommandType(name.command_type),
        sequence=name.sequence,
        reason=AckReason[rejection.reason.name],
        detail=f"{rejection.detail} (at {rejection.path})",
    )


Pending = AdaptationCommand | RefusedCommand


class CommandLedger:
    """What the worker has applied: the last sequence and the acks it sent, bounded."""

    def __init__(self) -> None:
        self.last_applied = 0
        self.acks: OrderedDict[str, CommandAck] = OrderedDict()
        self.waiting: dict[int, Pending] = {}

    def remember(self, ack: CommandAck) -> None:
        self.acks[ack.command_id] = ack
        while len(self.acks) > ACK_MEMORY:
            self.acks.popitem(last=False)

    def state_dict(self) -> dict[str, Any]:
        return {
            "last_applied": self.last_applied,
            "acks": [encode(ack) for ack in self.acks.values()],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.last_applied = int(state["last_applied"])
        self.acks.clear()
        for raw in state["acks"]:
            ack = decode(raw)
            assert isinstance(ack, CommandAck)
            self.acks[ack.command_id] = ack
