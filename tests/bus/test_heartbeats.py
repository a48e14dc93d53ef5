"""One heartbeat per publisher per interval, for all its channels, on `cmd.*.`: small however
many topics it has (it names them in turn), and enough for a subscriber of any one channel
to find its tail gaps and its publishers' liveness."""

from __future__ import annotations

import msgspec
import zmq
from bus_loops import pump_until
from bus_samples import channel_samples, fast_signals, header, wire

from bus import Channel, Gap, Publisher, Rejection, Subscriber
from bus.header import read_header, split_topic
from bus.publisher import MAX_HEARTBEAT_TOPICS
from bus.testing import InProcessBus, capture_rejections
from bus.topics import HEARTBEAT_TOPIC, control_topic
from leyline import AdaptationCommand, Heartbeat, Ready, RejectReason
from leyline.wire import REGISTRY

_DECODER = REGISTRY.decoder([Heartbeat, Ready])


def _beats(listener: zmq.Socket[bytes], wanted: int) -> list[tuple[bytes, Heartbeat]]:
    """The next `wanted` heartbeats naming any topic a raw listener receives, with their
    topics (the first, to a subscriber come before anything was published, names none)."""
    beats: list[tuple[bytes, Heartbeat]] = []
    while len(beats) < wanted and listener.poll(5000):
        frame = listener.recv()
        topic_frame, start = split_topic(frame)
        _, _, body = read_header(frame, start)
        message = _DECODER.decode(frame[body:])
        if isinstance(message, Heartbeat) and message.last_sequences:
            beats.append((topic_frame, message))
    return beats


def test_heartbeats_name_every_topic_in_turn_and_never_more_than_the_cap() -> None:
    topics = 2 * MAX_HEARTBEAT_TOPICS + 10
    # Heartbeats only when the test asks (no thread of its own): each one is a turn it counts.
    publisher = Publisher("tcp://127.0.0.1:*", "controller", background=False)
    listener = zmq.Context.instance().socket(zmq.SUB)
    try:
        listener.connect(publisher.address)
        listener.setsockopt(zmq.SUBSCRIBE, HEARTBEAT_TOPIC)
        assert publisher.wait_for_subscribers(HEARTBEAT_TOPIC, 1, 5.0)
        for n in range(topics):
            command = AdaptationCommand(
                command_id=f"c-{n}", blueprint_id="norm", target_slot_id="s"
            )
            publisher.publish(Channel.CMD, command, f"w{n}")
        for _ in range(3):
            publisher.heartbeat()
        beats = [beat.last_sequences for _, beat in _beats(listener, 3)]
    finally:
        listener.close(linger=0)
        publisher.close()
    assert [len(beat) for beat in beats] == [MAX_HEARTBEAT_TOPICS] * 3
    assert set().union(*beats) == {f"cmd.w{n}." for n in range(topics)}
    assert all(set(beat.values()) == {1} for beat in beats)


def test_one_heartbeat_per_interval_speaks_for_every_channel() -> None:
    """A worker publishing on four channels sends one heartbeat, not four, naming all four
    topics; a listener on every control topic hears it once, on the heartbeat topic."""
    publisher = Publisher("tcp://127.0.0.1:*", "w1", background=False)
    listener = zmq.Context.instance().socket(zmq.SUB)
    samples = channel_samples()
    try:
        listener.connect(publisher.address)
        for channel in Channel:
            listener.setsockopt(zmq.SUBSCRIBE, control_topic(channel))
        assert publisher.wait_for_subscribers(HEARTBEAT_TOPIC, 1, 5.0)
        for channel in (Channel.SIG, Channel.ACK, Channel.TEL, Channel.REP):
            publisher.publish(channel, samples[channel][0])
        publisher.heartbeat()
        publisher.heartbeat()
        beats = _beats(listener, 2)
        assert not listener.poll(200)  # nothing more: no per-channel heartbeats
    finally:
        listener.close(linger=0)
        publisher.close()
    assert [topic_frame for topic_frame, _ in beats] == [HEARTBEAT_TOPIC] * 2
    assert beats[-1][1].last_sequences == {"sig.w1.": 1, "ack.w1.": 1, "tel.w1.": 1, "rep.w1.": 1}


def test_a_subscriber_of_one_scope_finds_its_tail_gap_and_nothing_of_other_topics(
    inproc: InProcessBus,
) -> None:
    """Messages sent before the subscriber came are a gap the next heartbeat reveals: only on
    the topic it takes (`ack.w1.`), though the heartbeat names every channel's."""
    publisher = inproc.publisher("w1", background=False)
    samples = channel_samples()
    for _ in range(3):
        publisher.publish(Channel.ACK, samples[Channel.ACK][0])
    publisher.publish(Channel.SIG, fast_signals())
    publisher.publish(Channel.TEL, samples[Channel.TEL][0])
    subscriber = inproc.subscriber([(Channel.ACK, "w1")])
    gaps: list[Gap] = []
    subscriber.on_gap(gaps.append)
    inproc.connect(publisher, subscriber)
    beats = subscriber.metrics.heartbeats
    publisher.heartbeat()
    assert pump_until(lambda: subscriber.metrics.heartbeats > beats, subscriber)
    assert [(g.sender, g.topic, g.first, g.last) for g in gaps] == [("w1", b"ack.w1.", 1, 3)]
    assert subscriber.stale_peers() == set()


def test_a_per_channel_heartbeat_of_v1_is_refused_by_name(
    context: zmq.Context[zmq.Socket[bytes]],
) -> None:
    """A publisher of before the fold (v1, on each channel's control topic) is refused, named:
    its heartbeats would otherwise be taken as the whole story of one channel."""
    raw = context.socket(zmq.XPUB)
    raw.bind("tcp://127.0.0.1:*")
    subscriber = Subscriber(
        raw.getsockopt_string(zmq.LAST_ENDPOINT), [(Channel.SIG, None)], context=context
    )
    try:
        assert raw.poll(5000)  # the subscriptions arrived
        old = msgspec.msgpack.encode(
            {"type": "Heartbeat.v1", "interval_ms": 1000, "last_sequences": {"sig.w1.": 9}}
        )
        with capture_rejections(subscriber) as rejected:
            raw.send_multipart(wire(control_topic(Channel.SIG), header("w1", 0), old))
            assert pump_until(lambda: bool(rejected), subscriber)
    finally:
        subscriber.close()
        raw.close()
    [refused] = rejected
    assert isinstance(refused, Rejection)
    assert refused.reason is RejectReason.UNSUPPORTED_VERSION
    assert "Heartbeat v1" in refused.detail
    assert subscriber.metrics.heartbeats == 0
    assert subscriber.pipeline.tracker.take_gaps() == []
