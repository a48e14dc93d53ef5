"""Per-stream sequence checking: in order, gap, duplicate, late, or a sender restart.

A stream is one (sender, topic). Each carries the sender's incarnation, so a restarted sender
(new incarnation, sequence from 1) is told apart from duplicates. The last `WINDOW` sequences
are remembered as a bitmask, so a repeated message is a duplicate and a message older than
its successor (delivered late or forged) is out of order; both are refused.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = [
    "ACCEPTED",
    "MAX_STREAMS",
    "WINDOW",
    "Gap",
    "Order",
    "SequenceTracker",
]

WINDOW = 1024
#: Streams remembered at most; beyond it the least recently started is forgotten, so forged
#: sender ids cannot grow memory without bound.
MAX_STREAMS = 65_536
_MASK = (1 << WINDOW) - 1


class Order(enum.IntEnum):
    """How a sequence number relates to its stream."""

    NEXT = 0
    FIRST = 1
    RESTART = 2
    GAP = 3
    DUPLICATE = 4
    OUT_OF_ORDER = 5
    STALE_INCARNATION = 6


#: Orders that mean the message is delivered.
ACCEPTED = frozenset({Order.NEXT, Order.FIRST, Order.RESTART, Order.GAP})


@dataclass(slots=True)
class _Stream:
    incarnation: int
    last: int
    seen: int  # bit i set: sequence (last - i) was delivered


@dataclass(frozen=True, slots=True)
class Gap:
    """Sequences `first`..`last` of a stream never arrived (`initial`: before we joined)."""

    sender: str
    topic: bytes
    incarnation: int
    first: int
    last: int
    initial: bool = False

    @property
    def size(self) -> int:
        return self.last - self.first + 1


class SequenceTracker:
    """Classifies each (sender, topic, incarnation, sequence) and remembers gaps found."""

    def __init__(self) -> None:
        self._streams: dict[tuple[str, bytes], _Stream] = {}
        self.gaps: list[Gap] = []

    def observe(self, sender: str, topic: bytes, incarnation: int, sequence: int) -> Order:
        """Record one arrival and say how it fits its stream."""
        key = (sender, topic)
        stream = self._streams.get(key)
        if stream is None:
            self._start(key, _Stream(incarnation, sequence, 1))
            if sequence > 1:
                self.gaps.append(Gap(sender, topic, incarnation, 1, sequence - 1, initial=True))
            return Order.FIRST
        if incarnation != stream.incarnation:
            if incarnation < stream.incarnation:
                return Order.STALE_INCARNATION
            stream.incarnation, stream.last, stream.seen = incarnation, sequence, 1
            if sequence > 1:
                self.gaps.append(Gap(sender, topic, incarnation, 1, sequence - 1, initial=True))
            return Order.RESTART
        step = sequence - stream.last
        if step == 1:
            stream.last = sequence
            stream.seen = ((stream.seen << 1) | 1) & _MASK
            return Order.NEXT
        if step > 1:
            self.gaps.append(Gap(sender, topic, incarnation, stream.last + 1, sequence - 1))
            stream.last = sequence
            stream.seen = _shifted(stream.seen, step) | 1
            return Order.GAP
        age = -step
        if age < WINDOW and (stream.seen >> age) & 1:
            return Order.DUPLICATE
        return Order.OUT_OF_ORDER

    def observe_run(
        self, sender: str, topic: bytes, incarnation: int, first: int, count: int
    ) -> bool:
        """Record `count` sequences from `first` in one step when they simply continue their
        stream (the common batch); False, recording nothing, when any needs `observe`."""
        stream = self._streams.get((sender, topic))
        if (
            stream is None
            or stream.incarnation != incarnation
            or stream.last != first - 1
            or count >= WINDOW
        ):
            return False
        stream.last = first + count - 1
        stream.seen = ((stream.seen << count) | ((1 << count) - 1)) & _MASK
        return True

    def advance(self, sender: str, topic: bytes, incarnation: int, last_sent: int) -> Gap | None:
        """A heartbeat says `last_sent` was sent on this stream: record what we missed.

        For a stream not seen yet (we joined late, or the sender restarted) everything up to
        `last_sent` is an initial gap, and the stream starts there.
        """
        key = (sender, topic)
        stream = self._streams.get(key)
        gap: Gap | None = None
        if stream is None or incarnation > stream.incarnation:
            self._start(key, _Stream(incarnation, last_sent, 0))
            if last_sent >= 1:
                gap = Gap(sender, topic, incarnation, 1, last_sent, initial=True)
        elif stream.incarnation == incarnation and last_sent > stream.last:
            gap = Gap(sender, topic, incarnation, stream.last + 1, last_sent)
            stream.seen = _shifted(stream.seen, last_sent - stream.last)
            stream.last = last_sent
        if gap is not None:
            self.gaps.append(gap)
        return gap

    def _start(self, key: tuple[str, bytes], stream: _Stream) -> None:
        self._streams.pop(key, None)
        if len(self._streams) >= MAX_STREAMS:
            del self._streams[next(iter(self._streams))]
        self._streams[key] = stream

    def __len__(self) -> int:
        """How many streams are remembered."""
        return len(self._streams)

    def last(self, sender: str, topic: bytes) -> int | None:
        stream = self._streams.get((sender, topic))
        return None if stream is None else stream.last

    def take_gaps(self) -> list[Gap]:
        """The gaps found since the last call."""
        gaps, self.gaps = self.gaps, []
        return gaps


def _shifted(seen: int, step: int) -> int:
    """The window after the stream moved `step` ahead; a huge (hostile) step empties it."""
    return (seen << step) & _MASK if step < WINDOW else 0
