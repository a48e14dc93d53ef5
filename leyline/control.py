"""The bus's own control messages: heartbeats and the subscription-ready signal."""

from __future__ import annotations

from typing import Annotated

import msgspec

from leyline._types import Count, Ident, Serial

Topic = Annotated[str, msgspec.Meta(max_length=256)]


class EarlierIncarnation(msgspec.Struct, frozen=True, kw_only=True):
    """How far an earlier life of the publisher got, per topic (from its durable window)."""

    incarnation: Serial
    last_sequences: dict[Topic, Serial] = msgspec.field(default_factory=dict)


class Heartbeat(msgspec.Struct, frozen=True, kw_only=True, tag="Heartbeat.v2"):
    """A publisher is alive; the last sequence it sent on each topic reveals tail gaps.

    One per publisher per interval, on the heartbeat topic, naming topics of every channel
    (v1 was one per channel, on each channel's control topic: at 1,024 workers 92 % of the
    controller's inbound messages). v1 is refused as `unsupported_version`.
    """

    interval_ms: Count
    last_sequences: dict[Topic, Serial] = msgspec.field(default_factory=dict)
    #: Where to ask for a replay of recent messages ("" when the publisher keeps none).
    replay_endpoint: Topic = ""
    #: Earlier incarnations whose messages the publisher can still replay.
    earlier: list[EarlierIncarnation] = msgspec.field(default_factory=list)


class Ready(msgspec.Struct, frozen=True, kw_only=True, tag="Ready.v1"):
    """A publisher has seen a subscription to `prefix`; what follows on it is delivered."""

    prefix: Topic
    publisher: Ident


class ReplayRequest(msgspec.Struct, frozen=True, kw_only=True, tag="ReplayRequest.v1"):
    """Ask a publisher to resend sequences `first`..`last` of one topic and incarnation."""

    topic: Topic
    incarnation: Serial
    first: Serial
    last: Serial


class ReplayDone(msgspec.Struct, frozen=True, kw_only=True, tag="ReplayDone.v1"):
    """The end of a replay: which of the requested sequences the window still held."""

    topic: Topic
    incarnation: Serial
    first: Serial
    last: Serial
    #: The oldest sequence still in the window (0 when it holds none of this topic).
    oldest_kept: Serial
    resent: Serial
