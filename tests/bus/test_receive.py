"""Pull-style receive, typed subscriptions, batches on the wire, and a publisher that services
itself."""

from __future__ import annotations

import asyncio
import time

import pytest
import zmq
from bus_loops import pump_until
from bus_samples import advance, fast_signals

from bus import Channel, Envelope, Publisher, Subscriber
from bus.aio import messages
from bus.header import read_header, split_topic
from bus.testing import InProcessBus, capture_rejections
from leyline import (
    AckOutcome,
    AdaptationCommand,
    BudgetError,
    CommandAck,
    CommandType,
    FastTrainingSignals,
    WorkerHello,
    new_id,
)


def _connected(inproc: InProcessBus, **options: object) -> tuple[Publisher, Subscriber]:
    publisher = inproc.publisher("w1")
    subscriber = inproc.subscriber(
        [(Channel.SIG, None), (Channel.ACK, None)], publishers=[publisher], **options
    )
    inproc.connect(publisher, subscriber)
    return publisher, subscriber


def test_receive_returns_each_message_no_handler_took_then_none(inproc: InProcessBus) -> None:
    publisher, subscriber = _connected(inproc)
    for epoch in range(3):
        publisher.publish(Channel.SIG, fast_signals(epoch), "w1")
    received = [subscriber.receive(5.0) for _ in range(3)]
    assert [e.message.epoch for e in received if e is not None] == [0, 1, 2]
    assert subscriber.receive(0.01) is None


def test_a_wait_under_a_millisecond_waits_one_not_none(inproc: InProcessBus) -> None:
    """ZeroMQ counts whole ms: 0.4 ms truncated to 0 made every such poll a busy one."""
    _, subscriber = _connected(inproc)
    (socket,) = subscriber.sockets
    subscriber.poll(0.0004)
    assert socket.getsockopt(zmq.RCVTIMEO) == 1
    subscriber.poll(0.25)
    assert socket.getsockopt(zmq.RCVTIMEO) == 250


def test_iteration_yields_messages_as_they_come(inproc: InProcessBus) -> None:
    publisher, subscriber = _connected(inproc)
    publisher.publish_many(Channel.SIG, [fast_signals(epoch) for epoch in range(5)], "w1")
    seen = []
    for envelope in subscriber:
        seen.append(envelope.header.sequence)
        if len(seen) == 5:
            break
    assert seen == [1, 2, 3, 4, 5]


def test_a_typed_handler_gets_its_type_and_the_rest_waits_for_receive(
    inproc: InProcessBus,
) -> None:
    publisher, subscriber = _connected(inproc)
    acks: list[Envelope[CommandAck]] = []
    subscriber.on(CommandAck, acks.append)
    ack = CommandAck(
        command_id="c-1",
        worker_id="w1",
        outcome=AckOutcome.APPLIED,
        command_type=CommandType.GERMINATE,
    )
    publisher.publish(Channel.ACK, ack, "w1")
    publisher.publish(Channel.ACK, WorkerHello(worker_id="w1"), "w1")
    hello = subscriber.receive(5.0)
    assert hello is not None and isinstance(hello.message, WorkerHello)
    assert [e.message for e in acks] == [ack]


def test_cancelled_and_exited_handlers_stop_receiving(inproc: InProcessBus) -> None:
    publisher, subscriber = _connected(inproc)
    got: list[int] = []
    handle = subscriber.on(FastTrainingSignals, lambda e: got.append(e.header.sequence))
    publisher.publish(Channel.SIG, fast_signals(), "w1")
    assert pump_until(lambda: got == [1], subscriber)
    handle.cancel()
    with subscriber.on(Channel.SIG, lambda e: got.append(-e.header.sequence)):
        publisher.publish(Channel.SIG, fast_signals(), "w1")
        assert pump_until(lambda: got == [1, -2], subscriber)
    publisher.publish(Channel.SIG, fast_signals(), "w1")
    envelope = subscriber.receive(5.0)  # nobody handles sig now: it waits to be received
    assert envelope is not None and envelope.header.sequence == 3
    assert got == [1, -2]


def test_capture_rejections_stops_capturing_after_its_block(inproc: InProcessBus) -> None:
    _, subscriber = _connected(inproc)
    bad = [b"sig.w1.\x00\x09"]  # wire version 9, refused wherever it comes from
    with capture_rejections(subscriber) as captured:
        subscriber.replayed(bad)
    subscriber.replayed(bad)
    assert len(captured) == 1
    assert subscriber.metrics.rejected_total == 2


def test_a_type_no_subscribed_channel_carries_is_refused(inproc: InProcessBus) -> None:
    _, subscriber = _connected(inproc)
    try:
        subscriber.on(type(advance()), lambda e: None)
    except ValueError as error:
        assert "AdaptationCommand" in str(error)
    else:
        raise AssertionError("a handler for a channel not subscribed was accepted")


def test_the_async_iterator_yields_messages(inproc: InProcessBus) -> None:
    publisher, subscriber = _connected(inproc)

    async def take(count: int) -> list[int]:
        seen = []
        async for envelope in messages(subscriber):
            seen.append(envelope.header.sequence)
            if len(seen) == count:
                break
        return seen

    for epoch in range(4):
        publisher.publish(Channel.SIG, fast_signals(epoch), "w1")
    assert asyncio.run(asyncio.wait_for(take(4), 10.0)) == [1, 2, 3, 4]


def test_a_full_inbox_drops_the_oldest_counted(inproc: InProcessBus) -> None:
    publisher, subscriber = _connected(inproc, inbox=3)
    publisher.publish_many(Channel.SIG, [fast_signals(epoch) for epoch in range(5)], "w1")
    assert pump_until(lambda: subscriber.metrics.delivered[Channel.SIG] == 5, subscriber)
    assert subscriber.metrics.unclaimed_dropped == 2
    kept = [subscriber.receive(), subscriber.receive(), subscriber.receive()]
    assert [e.header.sequence for e in kept if e is not None] == [3, 4, 5]


def test_publish_many_is_one_frame_and_a_lone_message_goes_at_once(
    context: zmq.Context[zmq.Socket[bytes]],
) -> None:
    publisher = Publisher("inproc://batches", "w1", context=context, background=False)
    listener = context.socket(zmq.SUB)
    listener.setsockopt(zmq.SUBSCRIBE, b"sig.w1.")
    listener.connect("inproc://batches")
    try:
        assert publisher.wait_for_subscribers(b"sig.w1.")
        publisher.publish_many(Channel.SIG, [fast_signals(epoch) for epoch in range(10)], "w1")
        time.sleep(0.001)  # a pause: the next message is no longer part of a burst
        publisher.publish(Channel.SIG, fast_signals(), "w1")
        frames = []
        while len(frames) < 2:
            assert listener.poll(5_000), frames
            frames.append(listener.recv())
        counts = []
        for frame in frames:
            _, start = split_topic(frame)
            header, count, _ = read_header(frame, start)
            counts.append((header.sequence, count))
        assert counts == [(1, 10), (11, 1)]
    finally:
        listener.close()
        publisher.close()


def test_a_burst_arrives_whole_without_anyone_servicing_the_publisher(
    inproc: InProcessBus,
) -> None:
    publisher = inproc.publisher("w1", heartbeat_interval_s=0.05)
    subscriber = inproc.subscriber([(Channel.SIG, None)], publishers=[publisher])
    # Never `publisher.service()`: its own thread answers the subscription and heartbeats.
    assert subscriber.wait_ready(5.0, publishers=["w1"])
    for epoch in range(500):
        publisher.publish(Channel.SIG, fast_signals(epoch % 30), "w1")
    # ... and sends the burst's last batch.
    assert pump_until(lambda: subscriber.metrics.delivered[Channel.SIG] == 500, subscriber)
    beats = subscriber.metrics.heartbeats
    assert pump_until(lambda: subscriber.metrics.heartbeats > beats, subscriber)
    assert subscriber.metrics.rejected_total == 0 and subscriber.metrics.gaps == 0


def test_a_handler_that_cancels_itself_gets_no_more_of_its_frame(inproc: InProcessBus) -> None:
    """Handlers are resolved once per frame, yet a cancellation inside one takes effect at
    the next message of the same frame: the rest wait in the inbox."""
    publisher, subscriber = _connected(inproc)
    got: list[int] = []

    def once(envelope: Envelope[FastTrainingSignals]) -> None:
        got.append(envelope.header.sequence)
        handle.cancel()

    handle = subscriber.on(FastTrainingSignals, once)
    publisher.publish_many(Channel.SIG, [fast_signals(epoch) for epoch in range(5)], "w1")
    assert pump_until(lambda: got == [1] and len(subscriber._inbox) == 4, subscriber)
    rest = [subscriber.receive() for _ in range(4)]
    assert [e.header.sequence for e in rest if e is not None] == [2, 3, 4, 5]


def test_a_message_refused_at_encode_uses_no_sequence(inproc: InProcessBus) -> None:
    """Over its budget a message is refused before it is sequenced: no gap for anyone."""
    publisher = inproc.publisher("controller")
    huge = AdaptationCommand(
        command_id=new_id(),
        target_slot_id="s",
        blueprint_id="norm",
        annotations={f"k{i}": "v" * 120 for i in range(8)},
    )
    with pytest.raises(BudgetError):
        publisher.publish(Channel.CMD, huge, "w1")
    command = AdaptationCommand(command_id=new_id(), target_slot_id="s", blueprint_id="norm")
    assert publisher.publish(Channel.CMD, command, "w1") == 1
    assert publisher.last_sequences(Channel.CMD) == {"cmd.w1.": 1}
