"""How old a message is when the sender's clock is not ours: ageing robust to clock skew.

A message's `sent_ns` is the sender's clock; comparing it with ours makes a host whose clock
runs minutes behind send only "stale" signals and one running ahead send only "fresh" ones. So
each sender's offset is learned from its own traffic: `sent - received` is the offset minus
the transit time, and its maximum over recent messages is the offset minus the fastest transit.
A message's age is then how much slower than that fastest transit it came: queueing and delay,
whatever the two clocks say. The maximum is kept over two windows, so a clock stepped back is
forgiven within two windows. A sender's new incarnation (a restart, perhaps with its clock
set anew) starts its offset afresh: what its earlier life's clock said is no guide.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Length of each of the two windows the offset's maximum is kept over.
WINDOW_NS = 30_000_000_000


@dataclass(slots=True)
class _Offset:
    incarnation: int
    current: int
    previous: int
    started: int


class ClockOffsets:
    """Per sender: its clock's offset from ours, less the fastest transit seen recently."""

    def __init__(self, max_senders: int, window_ns: int = WINDOW_NS) -> None:
        self._offsets: dict[str, _Offset] = {}
        self._max = max_senders
        self._window = window_ns

    def age(self, sender: str, incarnation: int, sent_ns: int, received_ns: int) -> int:
        """Observe one message of `sender`'s `incarnation` and return its age in ns, skew
        taken out (>= 0)."""
        seen = sent_ns - received_ns
        offset = self._offsets.get(sender)
        if offset is None or incarnation > offset.incarnation:
            if offset is None and len(self._offsets) >= self._max:
                del self._offsets[next(iter(self._offsets))]
            offset = self._offsets[sender] = _Offset(incarnation, seen, seen, received_ns)
        elif incarnation < offset.incarnation:  # an earlier life's straggler teaches nothing
            return max(0, max(offset.current, offset.previous) - seen)
        elif received_ns - offset.started >= self._window:
            offset.previous, offset.current, offset.started = offset.current, seen, received_ns
        elif seen > offset.current:
            offset.current = seen
        return max(offset.current, offset.previous) - seen

    def offset_ns(self, sender: str) -> int | None:
        """The sender's clock minus ours, less the fastest recent transit; None if unheard."""
        offset = self._offsets.get(sender)
        return None if offset is None else max(offset.current, offset.previous)
