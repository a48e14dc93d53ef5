"""The replay client keeps sockets only while they are of use: idle ones are closed."""

from __future__ import annotations

import time

import zmq
from bus_loops import DEADLINE_S
from bus_samples import channel_samples

from bus import Channel, Publisher
from bus.replay import ReplayClient
from leyline import ReplayRequest, TelemetryEvent


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _answer(client: ReplayClient, publisher: Publisher, wanted: int) -> int:
    """Frames received until `wanted` came or the deadline passed."""
    count = 0
    deadline = time.monotonic() + DEADLINE_S
    while count < wanted and time.monotonic() < deadline:
        publisher.service()
        count += len(client.drain())
    return count


def test_an_idle_replay_socket_is_closed_and_reopened_when_needed() -> None:
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    event = next(m for m in channel_samples()[Channel.TEL] if isinstance(m, TelemetryEvent))
    publisher = Publisher("inproc://idle", "w1", context=context, replay_window=8)
    for _ in range(4):
        publisher.publish(Channel.TEL, event, "w1")
    clock = _Clock()
    client = ReplayClient(context, idle_close_s=30.0, clock=clock)
    request = ReplayRequest(topic="tel.w1.", incarnation=publisher.incarnation, first=1, last=4)
    assert client.request("w1", publisher.replay_endpoint, request)
    assert _answer(client, publisher, 5) == 5  # four messages and the ReplayDone
    clock.now = 29.0
    client.drain()
    assert client.open_sockets == 1  # used recently: kept
    clock.now = 60.0
    client.drain()
    assert client.open_sockets == 0
    assert client.request("w1", publisher.replay_endpoint, request)
    assert _answer(client, publisher, 5) == 5
    client.close()
    publisher.close()
    context.term()
