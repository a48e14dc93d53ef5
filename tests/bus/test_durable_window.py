"""A durable replay window: a restarted publisher still replays its earlier incarnation."""

from __future__ import annotations

import time
from pathlib import Path

import zmq
from bus_samples import channel_samples

from bus import Channel, Envelope, Publisher, Subscriber
from bus.pipeline import Pipeline
from bus.replay import ReplayClient
from leyline import ReplayDone, ReplayRequest, TelemetryEvent


def test_a_restarted_publisher_replays_and_announces_its_earlier_life(tmp_path: Path) -> None:
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    store = tmp_path / "outbox.db"
    event = next(m for m in channel_samples()[Channel.TEL] if isinstance(m, TelemetryEvent))
    first = Publisher(None, "w1", context=context, replay_window=8, replay_store=store)
    for _ in range(20):  # nobody listens: without a durable window these would be gone
        first.publish(Channel.TEL, event, "w1")
    old_life = first.incarnation
    first.close()  # the process "dies"

    second = Publisher(None, "w1", context=context, replay_window=8, replay_store=store)
    subscriber = Subscriber([], [(Channel.TEL, None)], context=context)
    subscriber.attach(second.attach("inproc://durable", bind=True), bind=False)
    gaps = []
    subscriber.on_gap(gaps.append)
    deadline = time.monotonic() + 5
    while not gaps and time.monotonic() < deadline:
        second.service()
        second.heartbeat()
        subscriber.poll(0.01)
    # The heartbeat named the earlier life and how far it got.
    assert [(g.incarnation, g.first, g.last, g.initial) for g in gaps] == [(old_life, 1, 20, True)]

    client = ReplayClient(context)
    request = ReplayRequest(topic="tel.w1.", incarnation=old_life, first=1, last=20)
    assert client.request("w1", second.replay_endpoint, request)
    frames: list[list[bytes]] = []
    deadline = time.monotonic() + 5
    while len(frames) < 9 and time.monotonic() < deadline:
        second.service()
        frames.extend(replayed.frames for replayed in client.drain())
    pipeline = Pipeline([Channel.TEL])
    outcomes = [o for f in frames for o in pipeline.process(f, replay=True)]
    assert all(isinstance(o, Envelope) for o in outcomes)
    replayed = [o.header.sequence for o in outcomes if isinstance(o, Envelope) and not o.is_control]
    assert replayed == list(range(13, 21))  # the last 8: the window's size
    done = outcomes[-1]
    assert isinstance(done, Envelope) and isinstance(done.message, ReplayDone)
    assert done.message.oldest_kept == 13 and done.message.resent == 8
    client.close()
    subscriber.close()
    second.close()
    context.term()
