"""Peers that change at one liveness check are reported together, every one of them."""

from __future__ import annotations

import time

from bus import Channel
from bus.testing import InProcessBus
from leyline import TelemetryEvent, TelemetryEventType
from leyline.budgets import DEFAULT_BUDGETS
from leyline.telemetry import MAX_LIVENESS_PEERS, PeerLiveness
from leyline.wire import encode
from services.node import Node, liveness_events

SECOND = 1_000_000_000
#: More than one event holds, fewer than a per-peer report would make events of.
PEERS = 12


def _peers(events: list[TelemetryEvent], kind: TelemetryEventType) -> list[str]:
    named = []
    for event in events:
        if event.event_type == kind:
            assert isinstance(event.payload, PeerLiveness)
            named += [peer for peer, _ in event.payload.peers()]
    return named


def test_peers_silent_at_one_check_make_one_event_naming_each() -> None:
    """Each peer was its own durable event and log line: a starved host silencing 930 at once
    made 930 of each at the controller (BENCHMARKS.md, branch `beats`)."""
    with InProcessBus() as bus:
        node = Node("controller", subscribe=[(Channel.SIG, None)], bus=bus, stale_after_s=5.0)
        events: list[TelemetryEvent] = []
        node.local_telemetry = events.append
        publishers = [bus.publisher(f"w{n}", background=False) for n in range(PEERS)]
        for publisher in publishers:
            bus.connect(publisher, node.subscriber)
        node.subscriber.check_liveness(time.monotonic_ns() + 6 * SECOND)
        node.pump(0)
        stale = [e for e in events if e.event_type == TelemetryEventType.PEER_STALE]
        assert len(stale) == 1
        assert sorted(_peers(events, TelemetryEventType.PEER_STALE)) == sorted(
            p.sender_id for p in publishers
        )
        # The bus says seconds; the event, as its contract has it, milliseconds.
        assert isinstance(stale[0].payload, PeerLiveness)
        assert all(5_900 < ms < 6_500 for _, ms in stale[0].payload.peers())
        node.pump(0)  # nothing changed since: nothing more
        assert len(events) == 1
        for publisher in publishers:
            publisher.close()
        node.close()


def test_every_peer_is_named_once_however_many_changed() -> None:
    changed = [(f"w{n}".ljust(128, "x"), float(n)) for n in range(2 * MAX_LIVENESS_PEERS + 3)]
    events = liveness_events(False, changed)
    assert len(events) == 3
    named = [
        (peer, ms)
        for event in events
        if isinstance(event.payload, PeerLiveness)
        for peer, ms in event.payload.peers()
    ]
    assert named == changed
    assert {e.event_type for e in events} == {TelemetryEventType.PEER_RECOVERED}
    # The longest identities still fit the telemetry payload budget.
    assert max(len(encode(e)) for e in events) < DEFAULT_BUDGETS.max_payload_bytes
