"""The bus's own control messages: heartbeats and the subscription-ready signal."""

from __future__ import annotations

from typing import Annotated

import msgspec

from leyline._types import Count, Ident

Topic = Annotated[str, msgspec.Meta(max_length=256)]


class Heartbeat(msgspec.Struct, frozen=True, kw_only=True, tag="Heartbeat.v1"):
    """A publisher is alive; the last sequence it sent on each topic reveals tail gaps."""

    interval_ms: Count
    last_sequences: dict[Topic, Count] = msgspec.field(default_factory=dict)


class Ready(msgspec.Struct, frozen=True, kw_only=True, tag="Ready.v1"):
    """A publisher has seen a subscription to `prefix`; what follows on it is delivered."""

    prefix: Topic
    publisher: Ident
