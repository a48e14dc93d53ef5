"""The semantic guards: a repeated stage report is no transition; commands judged by stage."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from bus import Channel, Envelope, topic
from bus.header import WIRE_VERSION, Header
from leyline import (
    AdaptationCommand,
    CommandType,
    LifecycleGuard,
    Message,
    RejectReason,
    SeedStage,
    SeedStateReport,
    TelemetryEvent,
    TelemetryEventType,
    new_id,
)
from leyline.telemetry import SeedStageChanged
from services.guards import CommandGuard, TransitionGuard

S = SeedStage
SLOT = "block2_post"


def _envelope(
    channel: Channel, message: Message, sender: str = "w1", sequence: int = 1, incarnation: int = 1
) -> Envelope:
    header = Header(WIRE_VERSION, sender, incarnation, sequence, time.time_ns())
    return Envelope(channel, sender, topic(channel, sender), header, message)


def _report(
    previous: SeedStage, stage: SeedStage, sequence: int = 1, incarnation: int = 1
) -> Envelope:
    report = SeedStateReport(seed_id="w1-s-1", slot_id=SLOT, previous_stage=previous, stage=stage)
    return _envelope(Channel.REP, report, sequence=sequence, incarnation=incarnation)


def _changed(from_stage: SeedStage, to_stage: SeedStage) -> Envelope:
    event = TelemetryEvent(
        event_type=TelemetryEventType.SEED_STAGE_CHANGED,
        payload=SeedStageChanged(seed_id="w1-s-1", from_stage=from_stage, to_stage=to_stage),
        slot_id=SLOT,
    )
    return _envelope(Channel.TEL, event)


@pytest.mark.parametrize("message", [_report, _changed], ids=["state-report", "stage-event"])
def test_a_report_that_repeats_the_recorded_stage_is_no_transition(
    message: Callable[[SeedStage, SeedStage], Envelope],
) -> None:
    guard = TransitionGuard()
    assert guard(message(S.TRAINING, S.BLENDING)) is None

    for _ in range(3):  # REQUEST_STATE answers, resent events: the same pair again
        assert guard(message(S.TRAINING, S.BLENDING)) is None
    assert guard.lifecycle.stage("w1", SLOT) is S.BLENDING
    assert guard(message(S.BLENDING, S.SHADOWING)) is None


def test_a_report_that_moves_from_another_stage_is_still_illegal() -> None:
    guard = TransitionGuard()
    assert guard(_report(S.TRAINING, S.BLENDING)) is None

    refused = guard(_report(S.PROBATIONARY, S.FOSSILIZED))

    assert refused is not None and refused.reason is RejectReason.ILLEGAL_TRANSITION
    assert "the slot is in BLENDING" in refused.detail
    assert guard.lifecycle.stage("w1", SLOT) is S.BLENDING


def test_after_a_hole_in_the_stream_the_view_is_taken_afresh_from_the_reports() -> None:
    guard = TransitionGuard()
    assert guard(_report(S.GERMINATED, S.TRAINING, sequence=1)) is None
    # Sequences 2..4 never arrived (a partition): the slot moved on to BLENDING meanwhile.
    assert guard(_report(S.BLENDING, S.SHADOWING, sequence=5)) is None
    assert guard.resyncs == 1
    assert guard.lifecycle.stage("w1", SLOT) is S.SHADOWING
    # Contiguous again: a report from another stage than the view's is still refused.
    refused = guard(_report(S.TRAINING, S.BLENDING, sequence=6))
    assert refused is not None and refused.reason is RejectReason.ILLEGAL_TRANSITION
    assert guard.resyncs == 1


def test_a_new_incarnation_is_a_hole_too() -> None:
    guard = TransitionGuard()
    assert guard(_report(S.GERMINATED, S.TRAINING, sequence=7)) is None
    # Restarted from a checkpoint taken before TRAINING was reached: its reports start over.
    assert guard(_report(S.DORMANT, S.GERMINATED, sequence=1, incarnation=2)) is None
    assert guard.resyncs == 1
    assert guard.lifecycle.stage("w1", SLOT) is S.GERMINATED


def test_the_command_guard_judges_against_the_stage_at_its_turn() -> None:
    lifecycle = LifecycleGuard()
    guard = CommandGuard(lifecycle, "w1", lambda c: c.target_slot_id)
    cull = AdaptationCommand(
        command_id=new_id(), command_type=CommandType.CULL, target_slot_id=SLOT
    )

    slot, verdict = guard.check(cull)
    assert (slot, verdict.allowed, verdict.reason) == (SLOT, False, RejectReason.ILLEGAL_TRANSITION)
    lifecycle.record("w1", SLOT, S.TRAINING)
    slot, verdict = guard.check(cull)
    assert (slot, verdict.allowed, verdict.to_stage) == (SLOT, True, S.CULLED)


def test_the_command_guard_names_a_target_the_worker_does_not_have() -> None:
    guard = CommandGuard(LifecycleGuard(), "w1", lambda c: None)
    alpha = AdaptationCommand(
        command_id=new_id(),
        command_type=CommandType.SET_ALPHA,
        target_slot_id="nowhere",
        alpha_value=0.5,
    )

    slot, verdict = guard.check(alpha)

    assert (slot, verdict.allowed, verdict.reason) == (None, False, RejectReason.UNKNOWN_TARGET)
    assert "'nowhere'" in verdict.detail
    state = guard.check(
        AdaptationCommand(command_id=new_id(), command_type=CommandType.REQUEST_STATE)
    )
    assert state[1].allowed
