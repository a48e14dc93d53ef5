"""Property: whatever frames arrive, the pipeline returns an Envelope or a Rejection."""

from __future__ import annotations

from bus_samples import SLOT, channel_samples, frames
from hypothesis import given, settings
from hypothesis import strategies as st

from bus import Channel, Envelope, Rejection
from bus.pipeline import Pipeline
from leyline import LifecycleGuard, RejectReason, SeedStage
from services.guards import CommandGuard, TransitionGuard

VALID = [
    frames(channel, "w1", message, sequence)
    for channel, messages in channel_samples().items()
    for sequence, message in enumerate(messages, start=1)
]


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
    """A valid message with one frame truncated, extended, bit-flipped or replaced."""
    message = list(draw(st.sampled_from(VALID)))
    index = draw(st.integers(0, 2))
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
        outcome = pipeline.process(message)
        assert isinstance(outcome, Envelope | Rejection)
        if isinstance(outcome, Rejection):
            refused += 1
            assert isinstance(outcome.reason, RejectReason)
            assert outcome.detail
        else:
            assert len(message) == 3 and outcome.topic == message[0]
    assert pipeline.metrics.rejected_total == refused


def test_every_valid_sample_passes_a_pipeline_without_guards() -> None:
    pipeline = Pipeline(list(Channel))
    for message in VALID:
        assert isinstance(pipeline.process(message), Envelope)
