"""A tool on the bus under CURVE: it connects to the publishers that bind, counts what it hears
per topic, records it, and a player speaks it again as its senders."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import msgspec
import pytest
from mcap.reader import make_reader

from bus import Channel, Publisher, Subscriber
from bus.security import Curve, Role, ensure_keys
from leyline import SeedStage, TelemetryEvent, TelemetryEventType, WorkerHello
from leyline.telemetry import SeedStageChanged
from services.observer import BusMap, BusStats, open_listener
from services.observer.player import Player
from services.observer.recorder import Recorder
from services.observer.recording import RecordingWriter, read_recording
from services.stack import free_ports

IDENTITIES = {"controller": Role.CONTROLLER, "w1": Role.WORKER, "tool": Role.TOOL}


@pytest.fixture
def bus(tmp_path: Path) -> BusMap:
    ensure_keys(tmp_path / "keys", IDENTITIES)
    worker, commands = (f"tcp://127.0.0.1:{port}" for port in free_ports(2))
    return BusMap(
        publishers=(f"controller@{commands}", f"w1@{worker}"),
        intakes=(),
        keys_dir=str(tmp_path / "keys"),
    )


@pytest.fixture
def peers(bus: BusMap) -> Iterator[tuple[Publisher, Publisher]]:
    """The controller's and w1's publishers, each bound where the bus map says, with CURVE."""
    keys = bus.keys_dir
    (_, commands), (_, published) = (address.split("@", 1) for address in bus.publishers)
    controller = Publisher(
        commands, "controller", security=Curve.from_directory(keys, "controller")
    )
    worker = Publisher(published, "w1", security=Curve.from_directory(keys, "w1"))
    yield controller, worker
    controller.close()
    worker.close()


def _until(
    condition: Callable[[], bool], turn: Callable[[], object], what: str, timeout_s: float = 10
) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        turn()


def _stage_event() -> TelemetryEvent:
    return TelemetryEvent(
        event_type=TelemetryEventType.SEED_STAGE_CHANGED,
        payload=SeedStageChanged(
            seed_id="seed-1", from_stage=SeedStage.DORMANT, to_stage=SeedStage.GERMINATED
        ),
        slot_id="block2_post",
    )


def _talk(tool: Subscriber, controller: Publisher, worker: Publisher, count: int) -> None:
    def turn() -> None:
        controller.service()
        worker.service()
        tool.poll(10)

    _until(
        lambda: (
            worker.wait_for_subscribers(b"ack.w1.", 1, 0.0)
            and controller.wait_for_subscribers(b"tel.controller.", 1, 0.0)
        ),
        turn,
        "the tool's subscriptions",
    )
    for _ in range(count):
        worker.publish(Channel.ACK, WorkerHello(worker_id="w1"), "w1")
        controller.publish(Channel.TEL, _stage_event(), "controller")
    delivered = tool.metrics.delivered
    _until(lambda: delivered[Channel.ACK] + delivered[Channel.TEL] >= 2 * count, turn, "all")


def test_a_tool_counts_each_topic_its_publishers_types_and_sizes(
    bus: BusMap, peers: tuple[Publisher, Publisher]
) -> None:
    tool = open_listener(bus, "tool")
    stats = BusStats(window_s=60)
    stats.watch(tool)
    try:
        _talk(tool, *peers, count=5)
    finally:
        tool.close()
    assert stats.publishers(tool) == {"controller": ["tel.controller."], "w1": ["ack.w1."]}
    hello, event = stats.topics["ack.w1."], stats.topics["tel.controller."]
    assert (hello.messages, dict(hello.types), dict(hello.publishers)) == (
        5,
        {"WorkerHello": 5},
        {"w1": 5},
    )
    assert event.types == {"TelemetryEvent": 5}
    assert hello.bytes < event.bytes  # a hello is smaller than a stage change
    rates = {rate.topic: rate for rate in stats.rates()}
    assert rates["ack.w1."].messages == 5 and rates["ack.w1."].hz > 0
    assert rates["ack.w1."].mean_bytes == hello.bytes / 5
    assert tool.metrics.rejected_total == 0


def test_a_recording_opens_with_the_mcap_reader_and_plays_back_as_its_senders(
    bus: BusMap, peers: tuple[Publisher, Publisher], tmp_path: Path
) -> None:
    tool = open_listener(bus, "tool")
    writer = RecordingWriter(tmp_path / "run.mcap")
    for channel in tool.channels:
        tool.on(channel, lambda envelope: writer.write(envelope, time.time_ns()))
    try:
        _talk(tool, *peers, count=3)
    finally:
        tool.close()
    writer.close({"messages": str(writer.messages)})

    with (tmp_path / "run.mcap").open("rb") as file:
        reader = make_reader(file)
        found = [(schema, channel) for schema, channel, _ in reader.iter_messages()]
        summary = reader.get_summary()
    assert summary is not None
    assert {s.name for s in summary.schemas.values()} == {"WorkerHello.v1", "TelemetryEvent.v2"}
    assert all(s.encoding == "jsonschema" for s in summary.schemas.values())
    assert {channel.topic for _, channel in found} == {
        "ack/w1/WorkerHello",
        "tel/controller/TelemetryEvent",
    }
    assert all(channel.message_encoding == "json" for _, channel in found)

    recorded = list(read_recording(tmp_path / "run.mcap"))
    assert [m.message for m in recorded if m.channel is Channel.ACK] == [
        WorkerHello(worker_id="w1")
    ] * 3

    # Played onto another subscriber as w1 and the controller, under their own keys.
    receiver_address = f"tcp://127.0.0.1:{free_ports(1)[0]}"
    receiver = Subscriber(
        receiver_address,
        [(Channel.ACK, None), (Channel.TEL, None)],
        bind=True,
        security=Curve.from_directory(bus.keys_dir, "tool"),
    )
    heard: list[tuple[str, object]] = []
    for channel in receiver.channels:
        receiver.on(channel, lambda e: heard.append((e.header.sender, e.message)))
    player = Player({"w1", "controller"}, [f"tool@{receiver_address}"], keys_dir=bus.keys_dir)
    try:
        _until(
            lambda: all(
                p.wait_for_subscribers(b"", 0, 0.0) and p.subscriptions
                for p in player.publishers.values()
            ),
            lambda: (player.pump(0.01), receiver.poll(10)),
            "the receiver's subscriptions",
        )
        stats = player.play(recorded, None, answer=False)
        _until(lambda: len(heard) >= len(recorded), lambda: receiver.poll(10), "the playback")
    finally:
        player.close(settle_s=0.0)
        receiver.close()
    assert stats.published == len(recorded) == 6 and stats.dropped == 0
    # Order holds per sender (one publisher each); two senders' streams interleave freely.
    for sender in ("w1", "controller"):
        assert [m for s, m in heard if s == sender] == [
            m.message for m in recorded if m.header.sender == sender
        ]
    assert receiver.metrics.rejected_total == 0


def test_topic_echo_prints_the_filtered_messages_as_json_lines(
    bus: BusMap, peers: tuple[Publisher, Publisher], tmp_path: Path
) -> None:
    controller, worker = peers
    echo = subprocess.Popen(
        [
            sys.executable, "-m", "services.cli", "topic", "echo",
            "--data-dir", str(tmp_path / "no-run-here"),
            "--keys-dir", bus.keys_dir,
            *(f"--connect={address}" for address in bus.publishers),
            "--scope", "w1", "--type", "WorkerHello", "--json", "--count", "3",
            "--duration", "60",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        _until(
            lambda: echo.poll() is not None,
            lambda: (
                worker.publish(Channel.ACK, WorkerHello(worker_id="w1"), "w1"),
                controller.publish(Channel.TEL, _stage_event(), "controller"),
                worker.service(),
                controller.service(),
                time.sleep(0.02),
            ),
            "three hellos echoed",
            timeout_s=60,
        )
        out, _ = echo.communicate()
    finally:
        echo.kill()
    assert echo.returncode == 0
    lines = [json.loads(line) for line in out.splitlines()]
    assert len(lines) == 3
    assert {(m["topic"], m["sender"], m["type"]) for m in lines} == {
        ("ack.w1.", "w1", "WorkerHello.v1")
    }
    hello = {"worker_id": "w1", "last_applied_sequence": 0, "finished": False}
    assert all(m["message"] == hello for m in lines)
    sequences = [m["sequence"] for m in lines]
    assert sequences == sorted(sequences)


def test_a_late_recorder_gets_what_it_missed_from_the_publishers_replay_window(
    bus: BusMap, tmp_path: Path
) -> None:
    published = bus.publishers[1].split("@", 1)[1]
    worker = Publisher(
        published,
        "w1",
        security=Curve.from_directory(bus.keys_dir, "w1"),
        replay_window=64,
        heartbeat_interval_s=0.1,
    )
    for epoch in range(1, 4):  # sent before any recorder listens: nobody receives them
        worker.publish(Channel.ACK, WorkerHello(worker_id="w1", last_applied_sequence=epoch), "w1")
    tool = open_listener(
        msgspec.structs.replace(bus, publishers=(f"w1@{published}",)), "tool", [Channel.ACK]
    )
    recorder = Recorder(tool, RecordingWriter(tmp_path / "late.mcap"))
    try:
        _until(
            lambda: recorder.writer.messages >= 3,
            lambda: (worker.service(), tool.poll(10), recorder.tick()),
            "the replayed hellos",
        )
    finally:
        summary = recorder.close()
        tool.close()
        worker.close()
    assert int(summary["repairs_asked"]) >= 1
    hellos = [m.message.last_applied_sequence for m in read_recording(tmp_path / "late.mcap")]
    assert hellos == [1, 2, 3]
