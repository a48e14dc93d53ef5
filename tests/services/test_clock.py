"""A service's clock and incarnation: a restart is a later incarnation even when the host's
clock was stepped back, so its peers take it as a restart and not as a stale sender."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bus import Channel, Rejection, Subscriber
from bus.security import Curve, Role, ensure_keys
from leyline import RejectReason, SeedStage, TelemetryEvent, TelemetryEventType
from leyline.telemetry import SeedStageChanged
from services.cli._service import make_node
from services.clock import CLOCK_OFFSET_VARIABLE, next_incarnation, service_clock
from services.config import BusConfig
from services.node import Node

EVENT = TelemetryEvent(
    event_type=TelemetryEventType.SEED_STAGE_CHANGED,
    payload=SeedStageChanged(
        seed_id="seed-1", from_stage=SeedStage.DORMANT, to_stage=SeedStage.GERMINATED
    ),
)
#: Ten minutes, in ns: how far the worker's clock is stepped back before its restart.
STEP_BACK_NS = 600 * 10**9


def test_an_incarnation_grows_across_starts_even_when_the_clock_goes_back(tmp_path: Path) -> None:
    path = tmp_path / "incarnations" / "w1"
    first = next_incarnation(path, lambda: 5_000)
    second = next_incarnation(path, lambda: 5_000 - STEP_BACK_NS)
    third = next_incarnation(path, lambda: 9_000)
    assert first == 5_000 and second == 5_001 and third == 9_000
    assert path.read_text().strip() == "9000"
    assert [p.name for p in path.parent.iterdir()] == ["w1"]  # nothing half-written left


def test_an_unreadable_incarnation_file_leaves_the_clock_to_decide(tmp_path: Path) -> None:
    path = tmp_path / "w1"
    path.write_text("not a number")
    assert next_incarnation(path, lambda: 7) == 7
    assert next_incarnation(path, lambda: 7) == 8


def test_the_clock_offset_is_read_once_and_a_bad_one_is_refused() -> None:
    env = {CLOCK_OFFSET_VARIABLE: "600"}
    ahead = service_clock(env)
    env[CLOCK_OFFSET_VARIABLE] = "-600"
    behind = service_clock(env)
    env[CLOCK_OFFSET_VARIABLE] = "0"
    earlier = behind()
    assert ahead() - earlier >= 1200 * 10**9
    assert service_clock({}) is service_clock({CLOCK_OFFSET_VARIABLE: " "})
    with pytest.raises(ValueError, match=CLOCK_OFFSET_VARIABLE):
        service_clock({CLOCK_OFFSET_VARIABLE: "ten minutes"})


class Sink:
    """A CURVE sink-role subscriber on loopback, what it delivered and refused, and the bus
    settings a worker `w1` uses to reach it."""

    def __init__(self, keys: Path) -> None:
        ensure_keys(keys, {"sink": Role.SINK, "w1": Role.WORKER})
        self.bus = BusConfig(keys_dir=str(keys), replay_window=0)
        self.subscriber = Subscriber(
            "tcp://127.0.0.1:*",
            [(Channel.TEL, None)],
            bind=True,
            security=Curve.from_directory(keys, "sink"),
        )
        self.delivered: list[TelemetryEvent] = []
        self.rejections: list[Rejection] = []
        self.subscriber.on(Channel.TEL, lambda envelope: self.delivered.append(envelope.message))
        self.subscriber.on_rejection(self.rejections.append)

    def start_worker(self, state_dir: Path) -> Node:
        node = make_node(
            "w1",
            self.bus,
            subscribe=[],
            publish_connect=[f"sink@{self.subscriber.addresses[0]}"],
            state_dir=state_dir,
        )
        for _ in range(200):  # both sides turn until the subscription has arrived
            if node.publisher.wait_for_subscribers(b"tel.", timeout_s=0.01):
                return node
            self.subscriber.poll(0.05)
        raise AssertionError("the sink's subscription never reached w1")

    def one_event_arrives(self, node: Node) -> bool:
        """Whether one event `node` publishes is delivered (False: refused or never seen)."""
        delivered, refused = len(self.delivered), len(self.rejections)
        node.emit(EVENT)
        for _ in range(100):
            self.subscriber.poll(0.05)
            if len(self.delivered) > delivered or len(self.rejections) > refused:
                break
        return len(self.delivered) > delivered


@pytest.fixture
def sink(tmp_path: Path) -> Iterator[Sink]:
    built = Sink(tmp_path / "keys")
    yield built
    built.subscriber.close()


def test_a_worker_restarted_with_its_clock_stepped_back_is_a_restart_not_stale(
    sink: Sink, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = sink.start_worker(tmp_path)
    assert sink.one_event_arrives(first)
    first.close()

    monkeypatch.setenv(CLOCK_OFFSET_VARIABLE, str(-STEP_BACK_NS / 1e9))
    restarted = sink.start_worker(tmp_path)
    try:
        assert restarted.publisher.incarnation > first.publisher.incarnation
        assert sink.one_event_arrives(restarted)
        assert sink.subscriber.metrics.restarts == 1
        assert sink.rejections == []
    finally:
        restarted.close()


def test_without_its_kept_incarnation_the_stepped_back_restart_would_be_refused_stale(
    sink: Sink, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The failure the kept incarnation prevents: a fresh data folder, the clock's time alone."""
    first = sink.start_worker(tmp_path / "before")
    assert sink.one_event_arrives(first)
    first.close()

    monkeypatch.setenv(CLOCK_OFFSET_VARIABLE, str(-STEP_BACK_NS / 1e9))
    restarted = sink.start_worker(tmp_path / "elsewhere")
    try:
        assert not sink.one_event_arrives(restarted)
        assert [r.reason for r in sink.rejections] == [RejectReason.STALE]
    finally:
        restarted.close()
