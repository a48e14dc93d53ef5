"""Channels, topics and which contracts each channel carries.

A topic frame reads `<channel>.<scope>.`: the trailing dot keeps a subscription to worker `w1`
from matching `w10`. The scope `*` is reserved for a channel's control messages (heartbeats,
ready signals), which every subscriber of the channel also receives.
"""

from __future__ import annotations

import enum
import re

import msgspec

from leyline import (
    AdaptationCommand,
    CommandAck,
    ContractError,
    FastTrainingSignals,
    FieldReport,
    RejectReason,
    SeedStateReport,
    SeedTelemetry,
    TelemetryEvent,
    TrainingSignals,
    WorkerHello,
)

__all__ = [
    "CHANNEL_CONTRACTS",
    "CONTROL_SCOPE",
    "HEARTBEAT_TOPIC",
    "Channel",
    "control_topic",
    "parse_topic",
    "subscription",
    "topic",
    "validate_scope",
]

CONTROL_SCOPE = "*"
_SCOPE = re.compile(r"^[A-Za-z0-9_\-:]{1,64}$")


class Channel(enum.StrEnum):
    """The five channels of the bus."""

    CMD = "cmd"
    SIG = "sig"
    ACK = "ack"
    TEL = "tel"
    REP = "rep"


#: The contracts each channel may carry; anything else is refused at decode.
CHANNEL_CONTRACTS: dict[Channel, tuple[type[msgspec.Struct], ...]] = {
    Channel.CMD: (AdaptationCommand, WorkerHello),
    Channel.SIG: (FastTrainingSignals,),
    Channel.ACK: (CommandAck, WorkerHello),
    Channel.TEL: (TelemetryEvent,),
    Channel.REP: (SeedStateReport, FieldReport, TrainingSignals, SeedTelemetry),
}

_CHANNELS = {channel.value.encode(): channel for channel in Channel}


def validate_scope(scope: str) -> str:
    """A scope is 1-64 characters of letters, digits, `_`, `-` or `:`."""
    if not _SCOPE.match(scope):
        raise ValueError(f"invalid scope {scope!r}: use 1-64 of [A-Za-z0-9_-:]")
    return scope


def topic(channel: Channel, scope: str) -> bytes:
    """The topic frame for a message on `channel` about `scope`."""
    return f"{channel.value}.{validate_scope(scope)}.".encode()


def control_topic(channel: Channel) -> bytes:
    """The topic of a channel's control messages."""
    return f"{channel.value}.{CONTROL_SCOPE}.".encode()


#: Where every publisher's heartbeat goes, whatever channels it publishes: `cmd.*.`, the
#: control topic every worker already listens on, so the largest fan-out (the controller's
#: to every worker) needs no subscription more. Every subscriber subscribes to it.
HEARTBEAT_TOPIC = control_topic(Channel.CMD)


def subscription(channel: Channel, scope: str | None = None) -> bytes:
    """The prefix that subscribes to one scope of a channel, or to all of it."""
    return topic(channel, scope) if scope is not None else f"{channel.value}.".encode()


def parse_topic(frame: bytes) -> tuple[Channel, str]:
    """Split a topic frame into channel and scope, refusing anything else as BAD_TOPIC."""
    head, dot, rest = frame.partition(b".")
    channel = _CHANNELS.get(head)
    if channel is None or not dot or not rest.endswith(b".") or len(rest) > 65:
        raise ContractError(
            RejectReason.BAD_TOPIC, f"topic {frame[:80]!r} is not <channel>.<scope>."
        )
    scope = rest[:-1].decode("ascii", errors="replace")
    if scope != CONTROL_SCOPE and not _SCOPE.match(scope):
        raise ContractError(RejectReason.BAD_TOPIC, f"scope {scope[:80]!r} is not valid")
    return channel, scope
