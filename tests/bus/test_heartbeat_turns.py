"""A heartbeat stays small however many topics its channel has: it names them in turn."""

from __future__ import annotations

import zmq

from bus import Channel, Publisher
from bus.header import read_header, split_topic
from bus.publisher import MAX_HEARTBEAT_TOPICS
from bus.topics import control_topic
from leyline import AdaptationCommand, Heartbeat, Ready
from leyline.wire import REGISTRY


def test_heartbeats_name_every_topic_in_turn_and_never_more_than_the_cap() -> None:
    topics = 2 * MAX_HEARTBEAT_TOPICS + 10
    # Heartbeats only when the test asks (no thread of its own): each one is a turn it counts.
    publisher = Publisher("tcp://127.0.0.1:*", "controller", background=False)
    listener = zmq.Context.instance().socket(zmq.SUB)
    beats: list[dict[str, int]] = []
    try:
        listener.connect(publisher.address)
        listener.setsockopt(zmq.SUBSCRIBE, control_topic(Channel.CMD))
        assert publisher.wait_for_subscribers(control_topic(Channel.CMD), 1, 5.0)
        for n in range(topics):
            command = AdaptationCommand(
                command_id=f"c-{n}", blueprint_id="norm", target_slot_id="s"
            )
            publisher.publish(Channel.CMD, command, f"w{n}")
        decoder = REGISTRY.decoder([Heartbeat, Ready])
        for _ in range(3):
            publisher.heartbeat()
        while len(beats) < 3 and listener.poll(5000):
            frame = listener.recv()
            _, start = split_topic(frame)
            _, _, body = read_header(frame, start)
            message = decoder.decode(frame[body:])
            if isinstance(message, Heartbeat) and message.last_sequences:  # not the first, empty
                beats.append(message.last_sequences)
    finally:
        listener.close(linger=0)
        publisher.close()
    assert [len(beat) for beat in beats] == [MAX_HEARTBEAT_TOPICS] * 3
    assert set().union(*beats) == {f"cmd.w{n}." for n in range(topics)}
    assert all(set(beat.values()) == {1} for beat in beats)
