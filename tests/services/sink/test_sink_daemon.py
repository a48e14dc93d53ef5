"""The sink daemon over real sockets: what it repairs ends up stored, hellos included."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bus import Channel, Publisher
from leyline import AckOutcome, CommandAck, CommandType, WorkerHello
from services.node import Node
from services.sink import TelemetryStore
from services.sink.daemon import SinkDaemon


@pytest.fixture
def worker() -> Iterator[Publisher]:
    publisher = Publisher("tcp://127.0.0.1:*", "w1", heartbeat_interval_s=0.05, replay_window=64)
    yield publisher
    publisher.close()


def test_a_hello_sent_before_the_sink_joined_is_replayed_and_stored(
    worker: Publisher, tmp_path: Path
) -> None:
    worker.publish(Channel.ACK, WorkerHello(worker_id="w1"), "w1")  # nobody listens yet
    node = Node("sink", subscribe=[(Channel.ACK, None)], subscribe_connect=[worker.address])
    with TelemetryStore(tmp_path / "sink.db") as store:
        daemon = SinkDaemon(node, store, flush_interval_s=0.0)
        try:
            while not node.subscriber.wait_ready(0.01, publishers=["w1"]):
                worker.service()
            ack = CommandAck(
                command_id="c1",
                worker_id="w1",
                outcome=AckOutcome.APPLIED,
                command_type=CommandType.CULL,
            )
            worker.publish(Channel.ACK, ack, "w1")  # the sink sees 2 first: 1 is a gap
            deadline = time.monotonic() + 20.0
            while store.sequences("w1", "ack.w1.", worker.incarnation) != [1, 2]:
                assert time.monotonic() < deadline, "the hello never reached the store"
                worker.service()
                node.pump(0.01)
                daemon.tick()
        finally:
            daemon.flush()
            daemon.replay.close()
            node.close()
        assert store.connection.execute("SELECT COUNT(*) FROM losses").fetchone()[0] == 0
        assert daemon.repair.requested >= 1
