"""Property: whatever frames arrive, the pipeline returns an Envelope or a Rejection per
message, and a bad message inside a batch costs only itself."""

from __future__ import annotations

from typing import Any

import msgspec
from bus_samples import SLOT, batch, channel_samples, fast_signals, frames
from hypothesis import given, settings
from hypothesis import strategies as st

from bus import Channel, Envelope, Rejection
from bus.pipeline import Pipeline
from leyline import LifecycleGuard, RejectReason, SeedStage
from leyline.wire import encode
from services.guards import CommandGuard, TransitionGuard

VALID = [
    frames(channel, "w1", message, sequence)
    for channel, messages in channel_samples().items()
    for sequence, message in enumerate(messages, start=1)
] + [batch(Channel.SIG, "w1", [encode(fast_signals(e)) for e in range(5)], 100)]


def _pipeline() -> Pipeline:
    lifecycle = LifecycleGuard()
    lifecycle.record("w1", SLOT, SeedStage.TRAINING)
    return Pipeline(
        list(Channel),
        guards={
            Channel.CMD: CommandGuard(lifecycle, "w1", lambda c: c.target_slot_id),
            Channel.TEL: TransitionGuard(),
            Channel.REP: TransitionGuard(),
        },
        max_signal_age_ns=10**9,
    )


@st.composite
def mutated(draw: st.DrawFn) -> list[bytes]:
    """A valid frame truncated, extended, bit-flipped or replaced."""
    message = list(draw(st.sampled_from(VALID)))
    index = 0
    frame = message[index]
    how = draw(st.sampled_from(["truncate", "extend", "flip", "replace"]))
    if how == "truncate":
        frame = frame[: draw(st.integers(0, max(len(frame) - 1, 0)))]
    elif how == "extend":
        frame += draw(st.binary(min_size=1, max_size=64))
    elif how == "flip" and frame:
        at = draw(st.integers(0, len(frame) - 1))
        frame = frame[:at] + bytes([frame[at] ^ draw(st.integers(1, 255))]) + frame[at + 1 :]
    else:
        frame = draw(st.binary(max_size=300))
    message[index] = frame
    return message


ANY_FRAMES = st.one_of(
    st.lists(st.binary(max_size=512), max_size=5),
    st.lists(st.sampled_from([b"sig.w1.", b"cmd.w1.", b"tel.*.", b"rep.x."]), max_size=5),
    mutated(),
    st.sampled_from(VALID),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(ANY_FRAMES, min_size=1, max_size=8))
def test_pipeline_never_raises_and_counts_every_refusal(batch: list[list[bytes]]) -> None:
    pipeline = _pipeline()
    refused = 0
    for message in batch:
        for outcome in pipeline.process(message):
            assert isinstance(outcome, Envelope | Rejection)
            if isinstance(outcome, Rejection):
                refused += 1
                assert isinstance(outcome.reason, RejectReason)
                assert outcome.detail
            else:
                assert len(message) == 1 and message[0].startswith(outcome.topic + b"\x00")
    assert pipeline.metrics.rejected_total == refused


ANY_VALUE = st.one_of(
    st.integers(-(2**63), 2**64 - 1),
    st.text(max_size=20),
    st.lists(st.integers(0, 300), max_size=25),
    st.dictionaries(st.text(max_size=5), st.integers(-(2**63), 2**63 - 1), max_size=3),
)


@settings(max_examples=100, deadline=None)
@given(st.integers(2, 20), st.data())
def test_a_bad_message_inside_a_batch_costs_only_itself(size: int, data: st.DataObject) -> None:
    payloads = [encode(fast_signals(epoch % 30)) for epoch in range(size)]
    bad = data.draw(st.integers(0, size - 1))
    payloads[bad] = msgspec.msgpack.encode(data.draw(ANY_VALUE))
    pipeline = Pipeline([Channel.SIG])
    outcomes = pipeline.process(batch(Channel.SIG, "w1", payloads, 1, sender="w1"))
    assert len(outcomes) == size
    for index, outcome in enumerate(outcomes):
        if index == bad:
            assert isinstance(outcome, Rejection)
            assert outcome.reason in {RejectReason.INVALID_VALUE, RejectReason.UNKNOWN_TAG}
        else:
            assert isinstance(outcome, Envelope) and outcome.header.sequence == index + 1
    assert pipeline.metrics.rejected_total == 1
    assert pipeline.metrics.received[Channel.SIG] == size


def test_every_valid_sample_passes_a_pipeline_without_guards() -> None:
    pipeline = Pipeline(list(Channel))
    for message in VALID:
        assert all(isinstance(outcome, Envelope) for outcome in pipeline.process(message))


def _decided(outcome: Envelope[Any] | Rejection) -> tuple[Any, ...]:
    """What an outcome decided (not a message's fields: a defaulted timestamp is the time
    of its decode)."""
    if isinstance(outcome, Rejection):
        return ("refused", outcome.reason, outcome.sender, outcome.topic, outcome.detail)
    return ("delivered", outcome.topic, outcome.header, type(outcome.message))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(ANY_FRAMES, st.sampled_from(VALID)), min_size=1, max_size=12))
def test_the_lone_path_decides_every_frame_as_frame_does(arrivals: list[list[bytes]]) -> None:
    """`Pipeline.lone` (falling back to `frame` when it declines) and `frame` alone give the
    same outcomes, counts and sequence state, repeats, gaps and hostile frames included."""
    fused, plain = _pipeline(), _pipeline()
    for message in (parts[0] for parts in arrivals if len(parts) == 1):
        outcome = fused.lone(message)
        got = [outcome] if outcome is not None else fused.frame(message)
        assert [_decided(o) for o in got] == [_decided(o) for o in plain.frame(message)]
    assert fused.metrics.received == plain.metrics.received
    assert fused.metrics.rejected == plain.metrics.rejected
    assert fused.metrics.decode_latency.count == plain.metrics.decode_latency.count
    assert fused.metrics.restarts == plain.metrics.restarts
    assert fused.tracker.take_gaps() == plain.tracker.take_gaps()
