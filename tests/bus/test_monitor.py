"""A connection libzmq drops for a protocol error comes back by itself, counted.

The peer is raw pyzmq bound on a port our socket connects to, so it can send a frame above
ZMQ_MAXMSGSIZE, after which libzmq ends the connection and, left alone, never makes it again.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest
import zmq
from bus_loops import ANY_PORT, DEADLINE_S, pump_until
from bus_samples import fast_signals, frames, header, stage_changed, wire

from bus import Channel, Envelope, Publisher, Rejection, Subscriber
from bus.monitor import ConnectionMonitor
from leyline import RejectReason, SeedStage
from leyline.budgets import DEFAULT_BUDGETS

SIG_W1 = b"sig.w1."
SUBSCRIPTIONS = {b"\x01sig.", b"\x01sig.*."}
#: Long enough after any event for libzmq to have scheduled its own retry.
LATER_NS = 10**10


def _raw(context: zmq.Context[zmq.Socket[bytes]], kind: int) -> zmq.Socket[bytes]:
    sock = context.socket(kind)
    sock.setsockopt(zmq.LINGER, 0)
    return sock


def _subscriptions_arrive(
    peer: zmq.Socket[bytes], expected: set[bytes], *subscribers: Subscriber
) -> bool:
    """Read `peer` (polling `subscribers` meanwhile) until each of `expected` has arrived."""
    pending = set(expected)

    def arrived() -> bool:
        while peer.poll(10):
            pending.discard(peer.recv())
        return not pending

    return pump_until(arrived, *subscribers)


@pytest.fixture
def peer(context: zmq.Context[zmq.Socket[bytes]]) -> Iterator[zmq.Socket[bytes]]:
    sock = _raw(context, zmq.XPUB)
    sock.bind(ANY_PORT)
    yield sock
    sock.close()


@pytest.fixture
def subscriber(
    context: zmq.Context[zmq.Socket[bytes]], peer: zmq.Socket[bytes]
) -> Iterator[Subscriber]:
    address = peer.getsockopt_string(zmq.LAST_ENDPOINT)
    sub = Subscriber(address, [(Channel.SIG, None)], context=context)
    assert _subscriptions_arrive(peer, SUBSCRIPTIONS)
    yield sub
    sub.close()


def test_frame_over_the_cap_drops_the_connection_and_it_comes_back_counted(
    subscriber: Subscriber, peer: zmq.Socket[bytes]
) -> None:
    delivered: list[Envelope] = []
    rejected: list[Rejection] = []
    subscriber.on(Channel.SIG, delivered.append)
    subscriber.on_rejection(rejected.append)
    cap = int(subscriber.sockets[0].getsockopt(zmq.MAXMSGSIZE))
    peer.send_multipart(wire(SIG_W1, header(), b"\x00" * (cap + 1)))
    # The subscriber attaches again by itself: its subscriptions arrive on a new connection.
    assert _subscriptions_arrive(peer, SUBSCRIPTIONS, subscriber), "never attached again"
    for sequence in range(1, 11):
        peer.send_multipart(frames(Channel.SIG, "w1", fast_signals(sequence), sequence))
    assert pump_until(lambda: len(delivered) == 10, subscriber)
    assert [e.header.sequence for e in delivered] == list(range(1, 11))
    assert [r.reason for r in rejected] == [RejectReason.CONNECTION_DROPPED]
    assert peer.getsockopt_string(zmq.LAST_ENDPOINT) in rejected[0].detail
    assert subscriber.metrics.rejected[RejectReason.CONNECTION_DROPPED] == 1
    assert subscriber.metrics.rejected_total == 1


def test_frame_between_budget_and_cap_is_refused_oversize_and_counted(
    subscriber: Subscriber, peer: zmq.Socket[bytes]
) -> None:
    delivered: list[Envelope] = []
    rejected: list[Rejection] = []
    subscriber.on(Channel.SIG, delivered.append)
    subscriber.on_rejection(rejected.append)
    over_budget = DEFAULT_BUDGETS.max_payload_bytes + 1
    assert over_budget < subscriber.sockets[0].getsockopt(zmq.MAXMSGSIZE)
    peer.send_multipart(wire(SIG_W1, header(), b"\x00" * over_budget))
    peer.send_multipart(frames(Channel.SIG, "w1", fast_signals(), 2))
    assert pump_until(lambda: len(delivered) == 1, subscriber)
    assert [r.reason for r in rejected] == [RejectReason.OVERSIZE]
    assert subscriber.metrics.rejected[RejectReason.OVERSIZE] == 1


def test_a_peer_that_restarts_is_reconnected_by_libzmq_and_not_counted(
    context: zmq.Context[zmq.Socket[bytes]],
) -> None:
    first = _raw(context, zmq.XPUB)
    address = first.bind(ANY_PORT).addr
    sub = _raw(context, zmq.SUB)
    sub.setsockopt(zmq.RECONNECT_IVL, 50)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    monitor = ConnectionMonitor(sub)
    sub.connect(address)
    monitor.watch(address)
    again = _raw(context, zmq.XPUB)
    try:
        assert first.poll(10_000) and first.recv() == b"\x01"
        first.close()
        deadline = time.monotonic() + DEADLINE_S
        while True:  # the port is free once libzmq has closed the listener
            try:
                again.bind(address)
                break
            except zmq.ZMQError:
                assert time.monotonic() < deadline, f"{address} never came free"
                time.sleep(0.01)
        # The subscription comes again once the SUB, asked anything, handles its reconnection.
        while not again.poll(10):
            assert time.monotonic() < deadline, "never reconnected"
            sub.poll(10)
        assert again.recv() == b"\x01"
        # libzmq's own retry answered the disconnect, so there is nothing to attach again.
        assert monitor.check(time.monotonic_ns() + LATER_NS) == []
    finally:
        monitor.close()
        sub.close()
        again.close()


def test_a_publisher_that_connects_attaches_again_counted(
    context: zmq.Context[zmq.Socket[bytes]],
) -> None:
    intake = _raw(context, zmq.XSUB)  # what a publisher connects to: a bound subscriber
    address = intake.bind(ANY_PORT).addr
    publisher = Publisher(address, "w1", bind=False, context=context)

    def serviced(condition: Callable[[], bool]) -> bool:
        def step() -> bool:
            intake.poll(10)  # lets the intake attach its connections; nothing arrives yet
            publisher.service()
            return condition()

        return pump_until(step)

    try:
        intake.send(b"\x01tel.")
        assert serviced(lambda: b"tel." in publisher.subscriptions)
        # An XPUB takes only subscriptions, so its cap is small: this junk is far over it.
        intake.send(b"\x02" + b"x" * 4096)
        assert serviced(
            lambda: (
                publisher.metrics.refused[RejectReason.CONNECTION_DROPPED] == 1
                and b"tel." in publisher.subscriptions
            )
        ), "never attached again"
        event = stage_changed(SeedStage.GERMINATED, SeedStage.TRAINING)
        assert publisher.publish(Channel.TEL, event, "w1") == 1
        topics = []
        while b"tel.w1." not in topics:  # after the Ready and heartbeats on tel.*.
            assert intake.poll(10_000), topics
            topics.append(intake.recv().split(b"\x00", 1)[0])
    finally:
        publisher.close()
        intake.close()
