"""A full send queue drops, counted, and the subscriber finds exactly those messages missing."""

from __future__ import annotations

from bus_loops import ANY_PORT, handshake, pump_until
from bus_samples import fast_signals

from bus import Channel, Gap, Publisher, SocketOptions, Subscriber
from bus.testing import InProcessBus

TINY = SocketOptions(send_hwm=8, receive_hwm=8)


def _flood(publisher: Publisher, at_least_dropped: int, most: int) -> int:
    """Publish until `at_least_dropped` drops (or `most` messages); returns how many sent."""
    published = 0
    while publisher.metrics.dropped[Channel.SIG] < at_least_dropped and published < most:
        publisher.publish(Channel.SIG, fast_signals(published % 30), "w1")
        published += 1
    publisher.flush()  # a batch still waiting is neither sent nor dropped yet
    return published


def _drain_and_account(publisher: Publisher, subscriber: Subscriber, published: int) -> None:
    received: list[int] = []
    gaps: list[Gap] = []
    subscriber.on(Channel.SIG, lambda e: received.append(e.header.sequence))
    subscriber.on_gap(gaps.append)
    dropped = publisher.metrics.dropped[Channel.SIG]
    assert dropped > 0
    assert publisher.metrics.sent[Channel.SIG] == published - dropped
    # Read everything queued, then a heartbeat tells the subscriber what the tail was.
    assert pump_until(lambda: len(received) == published - dropped, subscriber)

    def tail_reported() -> bool:
        publisher.heartbeat()
        return subscriber.metrics.missing == dropped

    assert pump_until(tail_reported, subscriber)
    assert sorted(received) == received
    assert subscriber.metrics.missing == dropped
    assert sum(g.size for g in gaps if not g.initial) == dropped
    assert set(received).isdisjoint(s for g in gaps for s in range(g.first, g.last + 1))


def test_inproc_drops_are_counted_and_reported_missing(inproc: InProcessBus) -> None:
    # One frame a message: the queue of 8 frames fills after 8 messages.
    publisher = inproc.publisher("w1", options=TINY, batch_messages=1)
    subscriber = inproc.subscriber([(Channel.SIG, "w1")], publishers=[publisher], options=TINY)
    inproc.connect(publisher, subscriber)
    published = _flood(publisher, at_least_dropped=50, most=500)
    _drain_and_account(publisher, subscriber, published)


def test_tcp_drops_are_counted_and_reported_missing() -> None:
    publisher = Publisher(ANY_PORT, "w1", options=TINY)
    subscriber = Subscriber(publisher.address, [(Channel.SIG, "w1")], options=TINY)
    try:
        handshake(subscriber, publisher)
        # Kernel socket buffers absorb some messages before the queue fills: flood harder.
        published = _flood(publisher, at_least_dropped=500, most=200_000)
        _drain_and_account(publisher, subscriber, published)
    finally:
        subscriber.close()
        publisher.close()
