"""Earlier incarnations announced in heartbeats: a full ledger forgets, it never goes deaf."""

from __future__ import annotations

import pytest
import zmq
from bus_loops import pump_until
from bus_samples import header, wire

import bus.subscriber
from bus import Channel, Gap, Subscriber
from bus.topics import HEARTBEAT_TOPIC
from leyline import Heartbeat
from leyline.control import EarlierIncarnation
from leyline.wire import encode


def _heartbeat(sender: str, incarnations: range) -> list[bytes]:
    beat = Heartbeat(
        interval_ms=1000,
        earlier=[
            EarlierIncarnation(incarnation=n, last_sequences={f"tel.{sender}.": 5})
            for n in incarnations
        ],
    )
    return wire(HEARTBEAT_TOPIC, header(sender, 0, incarnation=100), encode(beat))


def test_a_full_announcement_ledger_forgets_the_oldest_and_still_reports_every_gap(
    monkeypatch: pytest.MonkeyPatch, context: zmq.Context[zmq.Socket[bytes]]
) -> None:
    monkeypatch.setattr(bus.subscriber, "MAX_STREAMS", 4)
    raw = context.socket(zmq.XPUB)
    raw.bind("tcp://127.0.0.1:*")
    subscriber = Subscriber(
        raw.getsockopt_string(zmq.LAST_ENDPOINT), [(Channel.TEL, None)], context=context
    )
    gaps: list[Gap] = []
    subscriber.on_gap(gaps.append)
    assert raw.poll(5000)  # the subscription arrived
    raw.send_multipart(_heartbeat("w1", range(1, 7)))
    assert pump_until(lambda: len(gaps) == 6, subscriber)
    assert subscriber.metrics.announcements_forgotten == 2
    # The forgotten ones are not lost: announced again, they are reported again.
    raw.send_multipart(_heartbeat("w1", range(1, 3)))
    assert pump_until(lambda: len(gaps) == 8, subscriber)
    assert [(g.incarnation, g.first, g.last) for g in gaps[6:]] == [(1, 1, 5), (2, 1, 5)]
    subscriber.close()
    raw.close()
