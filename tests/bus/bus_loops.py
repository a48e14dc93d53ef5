"""Deadline-bounded loops that drive real sockets until a condition holds (never a sleep)."""

from __future__ import annotations

import time
from collections.abc import Callable

from bus import Publisher, Subscriber, ready

DEADLINE_S = 10.0
ANY_PORT = "tcp://127.0.0.1:*"


def pump_until(
    condition: Callable[[], bool],
    *subscribers: Subscriber,
    publishers: tuple[Publisher, ...] = (),
    timeout_s: float = DEADLINE_S,
) -> bool:
    """Service `publishers` and poll `subscribers` until `condition()` or the deadline."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        for publisher in publishers:
            publisher.service()
        for subscriber in subscribers:
            subscriber.poll(0.01)
    return True


def handshake(subscriber: Subscriber, *publishers: Publisher) -> None:
    """Return once `subscriber` has provably subscribed at every one of `publishers`."""
    senders = [p.sender_id for p in publishers]
    ready({p: () for p in publishers}, {subscriber: senders}, timeout_s=DEADLINE_S)
