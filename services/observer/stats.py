"""What a tool saw per topic: publishers, message types, rates, sizes, gaps and rejections.

Sizes are the frames as the bus carries them: topic, header and payload, the header and
payload encoded again from what was delivered (the subscriber hands out decoded messages, not
frames; the codec is deterministic, so the sizes are the sent ones).
"""

from __future__ import annotations

import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

from bus import Envelope, Gap, Rejection, Subscriber
from bus.header import encode_frame
from leyline.wire import REGISTRY
from services.observer.messages import type_name

_ENCODER = REGISTRY.encoder()


@dataclass
class TopicStats:
    """One topic (`<channel>.<scope>.`) as seen so far."""

    topic: str
    messages: int = 0
    bytes: int = 0
    publishers: Counter[str] = field(default_factory=Counter)
    types: Counter[str] = field(default_factory=Counter)
    gaps: int = 0
    missing: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    #: (monotonic ns, size) of the messages inside the rolling window.
    recent: deque[tuple[int, int]] = field(default_factory=deque)


@dataclass(frozen=True)
class Rate:
    """A topic's traffic over the rolling window."""

    topic: str
    messages: int
    hz: float
    mean_bytes: float
    bytes_per_s: float


class BusStats:
    """Collects a subscriber's deliveries, gaps and rejections by topic.

    `watch(subscriber)` registers the handlers; rates are over the last `window_s` seconds.
    """

    def __init__(self, window_s: float = 5.0) -> None:
        self.window_ns = int(window_s * 1e9)
        self.topics: dict[str, TopicStats] = {}
        self.started_ns = time.monotonic_ns()
        #: Senders known only from their heartbeats (nothing of theirs delivered yet).
        self.announced: set[str] = set()

    def watch(self, subscriber: Subscriber) -> None:
        for channel in subscriber.channels:
            subscriber.on(channel, self.observe)
        subscriber.on_gap(self.gap)
        subscriber.on_rejection(self.rejected)

    def _topic(self, name: str) -> TopicStats:
        found = self.topics.get(name)
        if found is None:
            found = self.topics[name] = TopicStats(name)
        return found

    def observe(self, envelope: Envelope[Any], now_ns: int | None = None) -> None:
        now = time.monotonic_ns() if now_ns is None else now_ns
        stats = self._topic(envelope.topic.decode())
        # As one wire frame of its own (a batch shares its header among its messages).
        size = len(encode_frame(envelope.topic, envelope.header, _ENCODER.encode(envelope.message)))
        stats.messages += 1
        stats.bytes += size
        stats.publishers[envelope.header.sender] += 1
        stats.types[type_name(envelope.message)] += 1
        stats.recent.append((now, size))
        self._expire(stats, now)

    def gap(self, gap: Gap) -> None:
        """A heartbeat or a sequence jump: before we joined (`initial`) it only names the
        stream; inside a stream it is a loss seen."""
        stats = self._topic(gap.topic.decode(errors="replace"))
        stats.publishers[gap.sender] += 0
        self.announced.add(gap.sender)
        if not gap.initial:
            stats.gaps += 1
            stats.missing += gap.size

    def rejected(self, rejection: Rejection) -> None:
        self._topic(rejection.topic or "?").rejected[rejection.reason.name.lower()] += 1

    def publishers(self, subscriber: Subscriber | None = None) -> dict[str, list[str]]:
        """Each sender heard (delivered, heartbeat or replay endpoint) and its topics."""
        found: dict[str, list[str]] = {}
        for stats in self.topics.values():
            for sender in stats.publishers:
                found.setdefault(sender, []).append(stats.topic)
        for sender in [*self.announced, *(subscriber.replay_endpoints if subscriber else ())]:
            found.setdefault(sender, [])
        return {sender: sorted(set(topics)) for sender, topics in sorted(found.items())}

    def rates(self, now_ns: int | None = None) -> list[Rate]:
        """Per topic: messages, rate, mean size and bandwidth over the rolling window."""
        now = time.monotonic_ns() if now_ns is None else now_ns
        span_s = min(self.window_ns, max(now - self.started_ns, 1)) / 1e9
        out = []
        for name in sorted(self.topics):
            stats = self.topics[name]
            self._expire(stats, now)
            count = len(stats.recent)
            total = sum(size for _, size in stats.recent)
            out.append(
                Rate(name, count, count / span_s, total / count if count else 0.0, total / span_s)
            )
        return out

    def _expire(self, stats: TopicStats, now: int) -> None:
        recent = stats.recent
        while recent and now - recent[0][0] > self.window_ns:
            recent.popleft()
