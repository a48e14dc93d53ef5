"""Test without ports: an in-process bus over `inproc://` running the same pipeline.

bus = InProcessBus()
pub = bus.publisher("w1")
sub = bus.subscriber([(Channel.SIG, None)])
bus.connect(pub, sub)            # returns once the subscription is proven
with capture_rejections(sub) as rejected:
    ...
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import zmq

from bus.publisher import Publisher
from bus.ready import ready
from bus.rejection import Rejection
from bus.subscriber import Subscriber
from bus.topics import Channel

_ids = itertools.count()


class InProcessBus:
    """Publishers and subscribers that share one ZeroMQ context over inproc:// addresses."""

    def __init__(self) -> None:
        self.context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self._open: list[Publisher | Subscriber] = []

    def publisher(self, sender_id: str, **options: Any) -> Publisher:
        """A publisher bound to a fresh inproc address."""
        address = f"inproc://leyline-{next(_ids)}"
        publisher = Publisher(address, sender_id, context=self.context, **options)
        self._open.append(publisher)
        return publisher

    def subscriber(
        self,
        subscribe: Iterable[tuple[Channel, str | None]],
        publishers: Iterable[Publisher] = (),
        **options: Any,
    ) -> Subscriber:
        """A subscriber connected to `publishers` (more can be connected later)."""
        addresses = [p.address for p in publishers]
        subscriber = Subscriber(addresses, subscribe, context=self.context, **options)
        self._open.append(subscriber)
        return subscriber

    def connect(self, publisher: Publisher, subscriber: Subscriber, timeout_s: float = 5.0) -> None:
        """Connect and wait (`bus.ready`) until the subscription has provably reached the
        publisher; `NotReadyError` (a `TimeoutError`) when it has not in `timeout_s`."""
        if publisher.address not in subscriber.addresses:
            subscriber.attach(publisher.address, bind=False)
        ready({publisher: ()}, {subscriber: [publisher.sender_id]}, timeout_s=timeout_s)

    def close(self) -> None:
        for endpoint in self._open:
            endpoint.close()
        self.context.term()

    def __enter__(self) -> InProcessBus:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextmanager
def capture_rejections(subscriber: Subscriber) -> Iterator[list[Rejection]]:
    """Collect every rejection `subscriber` makes inside the block (and none after it)."""
    captured: list[Rejection] = []
    with subscriber.on_rejection(captured.append):
        yield captured
