"""A faulty guard or a flood of forged senders cannot kill a subscriber or grow its memory."""

from __future__ import annotations

import msgspec
import pytest
from bus_samples import batch, fast_signals, frames

import bus.sequence
from bus import Channel, Envelope, Rejection
from bus.pipeline import Pipeline
from bus.sequence import SequenceTracker
from leyline import FastTrainingSignals, RejectReason
from leyline.wire import encode


def test_a_guard_that_raises_becomes_a_handler_error_rejection() -> None:
    def broken_guard(envelope: Envelope) -> None:
        raise KeyError("slot table not loaded")

    pipeline = Pipeline([Channel.SIG], guards={Channel.SIG: broken_guard})
    [outcome] = pipeline.process(frames(Channel.SIG, "w1", fast_signals(), sender="w1"))
    assert isinstance(outcome, Rejection)
    assert outcome.reason is RejectReason.HANDLER_ERROR
    assert "KeyError" in outcome.detail
    assert pipeline.metrics.rejected[RejectReason.HANDLER_ERROR] == 1


def test_forged_sender_ids_never_grow_the_tracker_past_its_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(bus.sequence, "MAX_STREAMS", 8)
    tracker = SequenceTracker()
    for n in range(100):
        tracker.observe(f"forged-{n}", b"sig.x.", 1, 1)
    assert len(tracker) == 8
    # The newest streams are the ones kept.
    assert tracker.last("forged-99", b"sig.x.") == 1
    assert tracker.last("forged-0", b"sig.x.") is None


def test_a_batch_of_old_and_current_majors_is_lifted_message_by_message_type() -> None:
    """A batch of v2 signals decodes in one typed pass with nothing to lift; one holding v1
    signals takes the union decoder, and every v1 comes out lifted to v2, in order."""
    signals = [fast_signals(epoch) for epoch in range(4)]
    for payloads in (
        [encode(s) for s in signals],
        [msgspec.msgpack.encode(s.named()) if i % 2 else encode(s) for i, s in enumerate(signals)],
    ):
        pipeline = Pipeline([Channel.SIG])
        outcomes = pipeline.process(batch(Channel.SIG, "w1", payloads, 1, sender="w1"))
        assert [type(o.message) for o in outcomes if isinstance(o, Envelope)] == [
            FastTrainingSignals
        ] * 4
        assert [o.message for o in outcomes if isinstance(o, Envelope)] == signals
        assert [o.header.sequence for o in outcomes if isinstance(o, Envelope)] == [1, 2, 3, 4]
