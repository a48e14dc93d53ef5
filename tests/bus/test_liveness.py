"""Peers that fall silent are marked stale and recovered; old fast signals are refused."""

from __future__ import annotations

import time

from bus_loops import pump_until
from bus_samples import channel_samples, fast_signals, frames, header, wire

from bus import Channel, Envelope, Rejection
from bus.pipeline import Pipeline
from bus.testing import InProcessBus, capture_rejections
from leyline import RejectReason
from leyline.wire import encode

SECOND = 1_000_000_000


def test_silent_publisher_goes_stale_then_recovers(inproc: InProcessBus) -> None:
    # Serviced only by the test (no thread of its own), so it can fall silent.
    publisher = inproc.publisher("w1", heartbeat_interval_s=0.02, background=False)
    subscriber = inproc.subscriber([(Channel.SIG, None)], stale_after_s=0.3)
    inproc.connect(publisher, subscriber)
    events: list[tuple[str, bool, float]] = []
    subscriber.on_liveness(lambda peer, stale, silent_s: events.append((peer, stale, silent_s)))
    beats = subscriber.metrics.heartbeats
    assert pump_until(
        lambda: subscriber.metrics.heartbeats > beats + 3, subscriber, publishers=(publisher,)
    )
    assert events == []
    # The publisher's loop stops servicing: no heartbeats, no messages.
    assert pump_until(lambda: len(events) == 1, subscriber)
    peer, stale, silent_s = events[0]
    assert (peer, stale) == ("w1", True) and silent_s > 0.3
    assert subscriber.stale_peers() == {"w1"}
    assert subscriber.metrics.stale_peers == 1
    # It comes back.
    assert pump_until(lambda: len(events) == 2, subscriber, publishers=(publisher,))
    assert events[1][:2] == ("w1", False)
    assert subscriber.stale_peers() == set()
    assert subscriber.metrics.stale_peers == 0


def test_liveness_is_judged_on_the_clock_given() -> None:
    with InProcessBus() as bus:
        publisher = bus.publisher("w1")
        subscriber = bus.subscriber([(Channel.SIG, None)], stale_after_s=5.0)
        bus.connect(publisher, subscriber)
        events: list[tuple[str, bool, float]] = []
        subscriber.on_liveness(lambda *event: events.append(event))
        now = time.monotonic_ns()
        subscriber.check_liveness(now + 4 * SECOND)
        assert events == []
        subscriber.check_liveness(now + 6 * SECOND)
        assert [e[:2] for e in events] == [("w1", True)]
        # Seconds, as every duration of the bus's API: silent since its hello, just before.
        assert 5.9 < events[0][2] < 6.5


def test_a_subscriber_behind_on_its_own_input_does_not_call_its_peers_silent() -> None:
    """Frames still queued are not silence: a subscriber that drained only part of its queue
    judges as of the last time it had none left, and judges now once it has caught up."""
    with InProcessBus() as bus:
        publisher = bus.publisher("w1")
        subscriber = bus.subscriber([(Channel.SIG, None)], stale_after_s=5.0, batch=2)
        bus.connect(publisher, subscriber)
        events: list[tuple[str, bool, float]] = []
        subscriber.on_liveness(lambda *event: events.append(event))
        for epoch in range(20):
            publisher.publish(Channel.SIG, fast_signals(epoch), "w1", correlation_id=f"c{epoch}")
        assert subscriber.sockets[0].poll(5000)  # arrived, not yet read
        time.sleep(0.1)  # all twenty
        later = time.monotonic_ns() + 6 * SECOND
        subscriber.drain()  # two of the twenty: behind
        subscriber.check_liveness(later)
        assert events == []
        while subscriber.drain():  # the rest: caught up
            pass
        subscriber.check_liveness(later + SECOND)
        assert [e[:2] for e in events] == [("w1", True)]


def test_a_peer_heard_again_while_the_subscriber_is_behind_is_back_never_negatively_silent(
    inproc: InProcessBus,
) -> None:
    """Judged as of the last catch-up, a peer heard since then was silent for 0 ms, not a
    negative time (the sink refuses a PEER_RECOVERED event that says so)."""
    publisher = inproc.publisher("w1", heartbeat_interval_s=0.02, background=False)
    subscriber = inproc.subscriber([(Channel.SIG, None)], stale_after_s=0.3, batch=2)
    inproc.connect(publisher, subscriber)
    events: list[tuple[str, bool, float]] = []
    subscriber.on_liveness(lambda *event: events.append(event))
    assert pump_until(lambda: len(events) == 1, subscriber)  # the publisher is not serviced
    for epoch in range(20):
        publisher.publish(Channel.SIG, fast_signals(epoch), "w1", correlation_id=f"c{epoch}")
    assert subscriber.sockets[0].poll(5000)
    time.sleep(0.15)  # past the next liveness check
    subscriber.poll()  # two of the twenty: behind, but w1 was just heard
    assert events[1] == ("w1", False, 0.0)


def test_signal_older_than_max_age_is_stale() -> None:
    now = 1_000 * SECOND
    pipeline = Pipeline([Channel.SIG], max_signal_age_ns=SECOND // 2, clock=lambda: now)
    payload = encode(fast_signals())
    fresh = wire(b"sig.w1.", header(sequence=1, sent_ns=now - SECOND // 4), payload)
    old = wire(b"sig.w1.", header(sequence=2, sent_ns=now - SECOND), payload)
    assert isinstance(pipeline.process(fresh)[0], Envelope)
    [outcome] = pipeline.process(old)
    assert isinstance(outcome, Rejection)
    assert outcome.reason is RejectReason.STALE
    assert outcome.path == "$.header.sent_ns"
    # 750 ms slower than the sender's fastest message: its clock is not compared with ours.
    assert "750 ms older than its sender's fastest recent ones" in outcome.detail
    assert pipeline.metrics.rejected[RejectReason.STALE] == 1


def test_a_stale_lone_signal_is_refused_by_the_fused_path_too() -> None:
    now = 1_000 * SECOND
    pipeline = Pipeline([Channel.SIG], max_signal_age_ns=SECOND // 2, clock=lambda: now)
    payload = encode(fast_signals())
    [fresh] = wire(b"sig.w1.", header(sequence=1, sent_ns=now - SECOND // 4), payload)
    [old] = wire(b"sig.w1.", header(sequence=2, sent_ns=now - SECOND), payload)
    assert pipeline.lone(fresh) is None  # a topic's first frame takes `frame`, which learns it
    assert isinstance(pipeline.frame(fresh)[0], Envelope)
    outcome = pipeline.lone(old)
    assert isinstance(outcome, Rejection) and outcome.reason is RejectReason.STALE
    assert pipeline.metrics.rejected[RejectReason.STALE] == 1
    assert pipeline.metrics.received[Channel.SIG] == 2


def test_max_age_applies_to_fast_signals_only() -> None:
    pipeline = Pipeline([Channel.SIG, Channel.TEL], max_signal_age_ns=SECOND, clock=lambda: 0)
    event = channel_samples()[Channel.TEL][0]
    old_event = wire(b"tel.w1.", header(sent_ns=0), encode(event))
    assert isinstance(pipeline.process(old_event)[0], Envelope)
    assert isinstance(pipeline.process(frames(Channel.SIG, "w1", fast_signals()))[0], Envelope)


def test_a_publisher_whose_clock_lags_is_skewed_not_stale(inproc: InProcessBus) -> None:
    """A clock 10 s behind ours is skew, not staleness (tests/bus/test_clock_skew.py has the
    delayed signals it must still refuse)."""
    lagging = inproc.publisher("w1", clock=lambda: time.time_ns() - 10 * SECOND)
    subscriber = inproc.subscriber([(Channel.SIG, None)], max_signal_age_s=1.0)
    inproc.connect(lagging, subscriber)
    delivered: list[Envelope] = []
    subscriber.on(Channel.SIG, delivered.append)
    with capture_rejections(subscriber) as rejected:
        lagging.publish(Channel.SIG, fast_signals(), "w1")
        assert pump_until(lambda: len(delivered) == 1, subscriber)
    assert rejected == []
