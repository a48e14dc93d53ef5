"""Freshness of fast signals when a sender's clock runs minutes ahead of or behind ours."""

from __future__ import annotations

import time

from bus_samples import fast_signals

from bus import Channel, Envelope, Rejection
from bus.clocks import ClockOffsets
from bus.testing import InProcessBus, capture_rejections
from leyline import RejectReason

MINUTES_10 = 600_000_000_000
MAX_AGE_S = 30.0


class SkewedClock:
    """A sender's wall clock `skew_ns` off ours, which a test can also hold back."""

    def __init__(self, skew_ns: int) -> None:
        self.skew_ns = skew_ns
        self.delay_ns = 0

    def __call__(self) -> int:
        return time.time_ns() + self.skew_ns - self.delay_ns


def _run(inproc: InProcessBus, clock: SkewedClock) -> tuple[list[Envelope], list[Rejection]]:
    publisher = inproc.publisher("w1", clock=clock)
    subscriber = inproc.subscriber([(Channel.SIG, None)], max_signal_age_s=MAX_AGE_S)
    inproc.connect(publisher, subscriber)
    received: list[Envelope] = []
    subscriber.on(Channel.SIG, received.append)
    with capture_rejections(subscriber) as rejected:
        for epoch in range(5):
            publisher.publish(Channel.SIG, fast_signals(epoch + 1), "w1")
            subscriber.poll(0.1)
        # This one was sent "60 s ago" by the sender's own clock: it sat in a queue.
        clock.delay_ns = 60_000_000_000
        publisher.publish(Channel.SIG, fast_signals(9), "w1")
        subscriber.poll(0.1)
        clock.delay_ns = 0
        publisher.publish(Channel.SIG, fast_signals(10), "w1")
        subscriber.poll(0.1)
    return received, rejected


def test_a_sender_ten_minutes_behind_is_fresh_and_its_delayed_signal_stale(
    inproc: InProcessBus,
) -> None:
    received, rejected = _run(inproc, SkewedClock(-MINUTES_10))
    assert [e.message.epoch for e in received] == [1, 2, 3, 4, 5, 10]
    assert [r.reason for r in rejected] == [RejectReason.STALE]


def test_a_sender_ten_minutes_ahead_cannot_pass_a_delayed_signal_as_fresh(
    inproc: InProcessBus,
) -> None:
    received, rejected = _run(inproc, SkewedClock(MINUTES_10))
    assert [e.message.epoch for e in received] == [1, 2, 3, 4, 5, 10]
    assert [r.reason for r in rejected] == [RejectReason.STALE]
    assert "older than its sender's fastest recent ones" in rejected[0].detail


def test_a_clock_stepped_back_is_forgiven_within_two_windows() -> None:
    window = 30_000_000_000
    offsets = ClockOffsets(max_senders=4, window_ns=window)
    now = 1_000 * window
    assert offsets.age("w1", 1, now + 5, now) == 0  # the first message sets the baseline
    step = 120_000_000_000  # the sender's clock is stepped back two minutes
    assert offsets.age("w1", 1, now - step, now + 1) == step + 6  # looks old at first
    later = now + 2 * window + 2
    offsets.age("w1", 1, later - step, later)  # a new window starts from the stepped clock
    assert offsets.age("w1", 1, later + 3 * window - step, later + 3 * window) == 0
    assert offsets.offset_ns("w1") == -step
    assert offsets.offset_ns("w2") is None


def test_a_restart_with_its_clock_stepped_back_is_fresh_at_once() -> None:
    offsets = ClockOffsets(max_senders=4)
    now = 1_000 * MINUTES_10
    assert offsets.age("w1", 1, now + 5, now) == 0
    # The same sender restarted (a later incarnation), its clock ten minutes behind.
    assert offsets.age("w1", 2, now - MINUTES_10, now + 1) == 0
    assert offsets.offset_ns("w1") == -MINUTES_10 - 1
    # A message of the earlier life, arriving late, does not undo what the new one taught.
    assert offsets.age("w1", 1, now + 5, now + 2) == 0
    assert offsets.age("w1", 2, now - MINUTES_10 + 3, now + 3) == 0


def test_the_offsets_of_many_senders_stay_bounded() -> None:
    offsets = ClockOffsets(max_senders=3)
    for n in range(10):
        offsets.age(f"w{n}", 1, 0, 0)
    assert [offsets.offset_ns(f"w{n}") for n in range(10)].count(None) == 7
