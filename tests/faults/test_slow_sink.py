"""A sink that stops reading: the publisher's sends fail and are counted, then replayed."""

from __future__ import annotations

import time

import pytest
from fault_stack import FaultHarness

from bus import Channel, Publisher, SocketOptions
from bus.security import Curve, Role, ensure_keys
from leyline import TelemetryEvent, TelemetryEventType
from leyline.telemetry import PlateauDetected
from services.chaos import RunFiles, check, summary

pytestmark = pytest.mark.slow

#: Far more than the loopback buffers and a small send queue hold, well inside the window.
BURST = 3000


def _event(number: int) -> TelemetryEvent:
    return TelemetryEvent(
        event_type=TelemetryEventType.PLATEAU_DETECTED,
        payload=PlateauDetected(plateau_epochs=number),
        message="x" * 200,
    )


def _stored(harness: FaultHarness) -> int:
    try:
        rows = harness.query("SELECT COUNT(*) FROM events WHERE sender = 'burst'")
    except Exception:  # the sink has not created its tables yet
        return 0
    return int(rows[0][0])  # type: ignore[call-overload]


def test_stalled_sink_gets_every_dropped_event_replayed(harness: FaultHarness) -> None:
    harness.start(["sink"])
    intake = dict(harness.stack.plan.services[0][2])["LEYLINE_SINK_INTAKE"]
    keys = harness.data_dir / "keys"
    ensure_keys(keys, {"burst": Role.WORKER})  # trusted by the running sink without a restart
    publisher = Publisher(
        f"sink@{intake}",
        "burst",
        bind=False,
        security=Curve.from_directory(keys, "burst"),
        options=SocketOptions(send_hwm=20),
        batch_messages=1,  # one frame a message: a queue of 20 frames is 20 messages
        heartbeat_interval_s=0.25,
        replay_window=harness.settings.replay_window,
    )
    try:
        assert publisher.wait_for_subscribers(b"tel.burst.", 1, 60.0)
        harness.stack.pause("sink")
        for number in range(BURST // 2):
            publisher.publish(Channel.TEL, _event(number), "burst")
        # Then a sink that reads a little now and then: a slow disk rather than a dead one.
        for number in range(BURST // 2, BURST):
            if number % 100 == 0:
                harness.stack.resume("sink")
                time.sleep(0.02)
                harness.stack.pause("sink")
            publisher.publish(Channel.TEL, _event(number), "burst")
        harness.stack.resume("sink")
        dropped = publisher.metrics.dropped[Channel.TEL]
        deadline = time.monotonic() + 60.0
        while _stored(harness) < BURST and time.monotonic() < deadline:
            publisher.service()  # heartbeats reveal the tail; replay requests are answered
            time.sleep(0.01)
        stored = _stored(harness)
    finally:
        harness.stack.stop()
        publisher.close()

    verdict = check(RunFiles.of(harness.data_dir, harness.settings.replay_window))
    assert dropped > 0, "the stalled sink never made a send fail"
    assert stored == BURST, summary(verdict)
    assert verdict.passed, summary(verdict)
    assert verdict.counts.events_lost == 0
