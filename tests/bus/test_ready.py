"""The ready handshake: once it returns, nothing published afterwards is lost to a late joiner."""

from __future__ import annotations

import pytest
from bus_loops import ANY_PORT, handshake, pump_until
from bus_samples import fast_signals

import bus
from bus import Channel, Envelope, Publisher, Subscriber, topic
from bus.testing import InProcessBus

AFTER_READY = 20


def _late_joiner_gets_everything(publisher: Publisher, subscriber: Subscriber) -> None:
    received: list[Envelope] = []
    subscriber.on(Channel.SIG, received.append)
    handshake(subscriber, publisher)
    first = publisher.publish(Channel.SIG, fast_signals(), "w1")
    assert first is not None
    for _ in range(AFTER_READY - 1):
        publisher.publish(Channel.SIG, fast_signals(), "w1")
    assert pump_until(lambda: len(received) == AFTER_READY, subscriber, timeout_s=5.0)
    assert [e.header.sequence for e in received] == list(range(first, first + AFTER_READY))


def test_late_inproc_subscriber_receives_all_after_connect(inproc: InProcessBus) -> None:
    publisher = inproc.publisher("w1")
    for _ in range(200):
        publisher.publish(Channel.SIG, fast_signals(), "w1")  # before anyone listens
        subscriber = inproc.subscriber([(Channel.SIG, "w1")])
        inproc.connect(publisher, subscriber)
        first = publisher.publish(Channel.SIG, fast_signals(), "w1")
        assert first is not None
        assert subscriber.poll(5.0) == 1
        assert subscriber.pipeline.tracker.last("w1", b"sig.w1.") == first
        subscriber.close()


def test_late_tcp_subscriber_receives_all_after_ready() -> None:
    publisher = Publisher(ANY_PORT, "w1")
    try:
        for _ in range(30):
            publisher.publish(Channel.SIG, fast_signals(), "w1")
            subscriber = Subscriber(publisher.address, [(Channel.SIG, "w1")])
            try:
                _late_joiner_gets_everything(publisher, subscriber)
            finally:
                subscriber.close()
    finally:
        publisher.close()


def test_ready_needs_every_named_publisher(inproc: InProcessBus) -> None:
    # Serviced only here, so each answers exactly when the test lets it.
    first = inproc.publisher("w1", background=False)
    second = inproc.publisher("w2", background=False)
    subscriber = inproc.subscriber([(Channel.SIG, None)], publishers=[first, second])
    assert not subscriber.wait_ready(0.05, publishers=["w1", "w2"])
    first.service()
    assert pump_until(lambda: subscriber.wait_ready(0.01, publishers=["w1"]), subscriber)
    assert not subscriber.wait_ready(0.05, publishers=["w1", "w2"])
    second.service()
    assert pump_until(lambda: subscriber.wait_ready(0.01, publishers=["w1", "w2"]), subscriber)


def test_publisher_waits_for_its_subscribers(inproc: InProcessBus) -> None:
    publisher = inproc.publisher("controller")
    assert not publisher.wait_for_subscribers(b"cmd.w1.", timeout_s=0.05)
    inproc.subscriber([(Channel.CMD, "w1")], publishers=[publisher])
    inproc.subscriber([(Channel.CMD, None)], publishers=[publisher])
    assert publisher.wait_for_subscribers(b"cmd.w1.", count=2)
    assert not publisher.wait_for_subscribers(b"cmd.w1.", count=3, timeout_s=0.05)


def test_bus_ready_proves_every_link_both_ways(inproc: InProcessBus) -> None:
    controller = inproc.publisher("controller", background=False)
    worker = inproc.publisher("w1", background=False)
    at_worker = inproc.subscriber([(Channel.CMD, "w1")], publishers=[controller])
    at_controller = inproc.subscriber([(Channel.SIG, None)], publishers=[worker])
    links = (
        {controller: [topic(Channel.CMD, "w1")], worker: [topic(Channel.SIG, "w1")]},
        {at_worker: ["controller"], at_controller: ["w1"]},
    )
    assert len(bus.missing(*links)) == 4  # nobody serviced yet: no link is proven
    bus.ready(*links)
    assert bus.missing(*links) == []
    received: list[Envelope] = []
    at_controller.on(Channel.SIG, received.append)
    worker.publish(Channel.SIG, fast_signals())
    worker.flush()
    assert pump_until(lambda: len(received) == 1, at_controller)


def test_bus_ready_names_the_link_that_never_came(inproc: InProcessBus) -> None:
    publisher = inproc.publisher("controller")
    inproc.subscriber([(Channel.CMD, "w1")], publishers=[publisher])
    with pytest.raises(bus.NotReadyError) as caught:
        bus.ready({publisher: [topic(Channel.CMD, "w1"), topic(Channel.CMD, "w2")]}, timeout_s=0.3)
    assert caught.value.missing == ["controller: no subscriber for 'cmd.w2.'"]
    assert isinstance(caught.value, TimeoutError)
