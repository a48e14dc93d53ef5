"""The one connect/ready helper: wait until publishers are heard and subscribers hear them.

A ZeroMQ subscription takes a moment to reach its publisher, and what is published before
that is lost to the subscriber. Two facts prove a link, and no sleep does: a publisher has a
subscription covering the topic it will publish on, and a subscriber has had a publisher's
`Ready` on every channel it subscribes to. `missing` asks both without waiting (a loop that
drives many endpoints asks it between its own turns); `ready` services and polls the
endpoints it is given until nothing is missing, and names what still is when time runs out.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping

from bus.publisher import Publisher
from bus.subscriber import Subscriber
from leyline.errors import LeylineError

__all__ = ["NotReadyError", "missing", "ready"]

#: Each endpoint waits at most this long per turn, so a turn of many stays short.
_TURN_S = 0.005


class NotReadyError(LeylineError, TimeoutError):
    """Endpoints that were not connected in time; `missing` says which link, in words."""

    def __init__(self, missing: list[str]) -> None:
        super().__init__("not ready: " + "; ".join(missing))
        self.missing = missing


def missing(
    publishers: Mapping[Publisher, Iterable[bytes]] | None = None,
    subscribers: Mapping[Subscriber, int | Iterable[str]] | None = None,
) -> list[str]:
    """What is not connected yet, without waiting; empty when every link is proven.

    `publishers` maps a publisher to the topic prefixes (`bus.topic(channel, scope)`) each of
    which needs a subscriber; `subscribers` maps a subscriber to the publishers (a count, or
    their sender ids) each of its channels must have heard.
    """
    found = [
        f"{publisher.sender_id}: no subscriber for {prefix.decode(errors='replace')!r}"
        for publisher, prefixes in (publishers or {}).items()
        for prefix in prefixes
        if not publisher.wait_for_subscribers(prefix, 1, 0.0)
    ]
    for subscriber, heard_from in (subscribers or {}).items():
        expected = heard_from if isinstance(heard_from, int) else list(heard_from)
        if not subscriber.wait_ready(0.0, publishers=expected):
            found.append(f"subscriber of {subscriber.addresses}: has not heard {expected}")
    return found


def ready(
    publishers: Mapping[Publisher, Iterable[bytes]] | None = None,
    subscribers: Mapping[Subscriber, int | Iterable[str]] | None = None,
    *,
    timeout_s: float = 5.0,
) -> None:
    """Service every publisher and poll every subscriber (delivering what arrives to their
    handlers) until `missing` is empty; `NotReadyError` naming what is missing otherwise.

    A publisher given no prefixes is only serviced: it answers the subscriptions that a
    subscriber given here waits on (how `InProcessBus.connect` proves one link).
    """
    publishers = {p: list(prefixes) for p, prefixes in (publishers or {}).items()}
    subscribers = {s: n if isinstance(n, int) else list(n) for s, n in (subscribers or {}).items()}
    deadline = time.monotonic() + timeout_s
    while True:
        for publisher, prefixes in publishers.items():
            publisher.service()
            if not subscribers:  # nothing to poll: wait on the publisher's own socket
                for prefix in prefixes:
                    publisher.wait_for_subscribers(prefix, 1, _TURN_S)
        for subscriber in subscribers:
            subscriber.poll(_TURN_S)
        left = missing(publishers, subscribers)
        if not left:
            return
        if time.monotonic() >= deadline:
            raise NotReadyError(left)
