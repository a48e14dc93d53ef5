"""Commands on the worker model: each type applied, illegal ones rejected and never applied."""

from __future__ import annotations

import msgspec
import pytest
import torch
from torch import nn
from worker_helpers import assert_wire_valid, command

from leyline import (
    AckOutcome,
    CommandType,
    ContractError,
    RejectReason,
    SeedStage,
    TelemetryEventType,
)
from leyline.commands import MAX_LEARNING_RATE
from leyline.wire import decode
from services.worker import CommandOutcome, Trainer, WorkerModel, register_blueprint
from services.worker.blueprints import unregister_blueprint

S = SeedStage
C = CommandType
E = TelemetryEventType


def _kinds(outcome: CommandOutcome) -> list[TelemetryEventType]:
    return [e.event_type for e in outcome.events]


def _germinate(model: WorkerModel, slot_id: str = "block2_post", blueprint: str = "norm") -> str:
    outcome = model.apply_command(
        command(C.GERMINATE, blueprint_id=blueprint, target_slot_id=slot_id)
    )
    assert outcome.applied, outcome.detail
    assert outcome.seed_id is not None
    return outcome.seed_id


def _to_probation(model: WorkerModel, seed_id: str) -> None:
    """Drive one seed to PROBATIONARY by command, setting the metrics each gate reads."""
    slot = model.slots["block2_post"]
    model.begin_epoch(1)
    slot.metrics.epochs_in_current_stage = 3
    slot.metrics.improvement_since_stage_start = 2.0
    assert model.apply_command(command(C.ADVANCE_STAGE, target_seed_id=seed_id)).applied
    model.apply_command(command(C.SET_ALPHA, target_seed_id=seed_id, alpha_value=1.0))
    slot.metrics.epochs_in_current_stage = 3
    assert model.apply_command(command(C.ADVANCE_STAGE, target_seed_id=seed_id)).applied
    assert model.apply_command(command(C.ADVANCE_STAGE, target_seed_id=seed_id)).applied
    assert slot.stage is S.PROBATIONARY


def test_germinate_builds_a_seed_in_a_dormant_slot(model: WorkerModel) -> None:
    cmd = command(C.GERMINATE, blueprint_id="attention", target_slot_id="block3_post")
    outcome = model.apply_command(cmd)
    assert outcome.outcome is AckOutcome.APPLIED and outcome.reason == ""
    assert outcome.stage_after is S.GERMINATED
    assert outcome.seed_id == "w1-block3_post-1"
    assert _kinds(outcome) == [E.SEED_STAGE_CHANGED, E.SEED_GERMINATED, E.COMMAND_EXECUTED]
    assert outcome.events[1].payload.params == 64 * 16 * 2 + 16 + 64  # type: ignore[union-attr]
    assert [r.stage for r in outcome.reports] == [S.GERMINATED]
    assert model.seed_learning_rate("block3_post") == model.training.seed_learning_rate
    ack = outcome.ack(sequence=9, duration_ms=1.5)
    assert (ack.command_id, ack.worker_id, ack.sequence) == (cmd.command_id, "w1", 9)
    assert ack.stage_after is S.GERMINATED and ack.outcome is AckOutcome.APPLIED
    assert_wire_valid(outcome)


def test_seed_ids_count_germinations_per_worker(model: WorkerModel) -> None:
    assert _germinate(model, "block2_post") == "w1-block2_post-1"
    assert _germinate(model, "block3_post") == "w1-block3_post-2"


def test_germinate_into_an_occupied_slot_is_rejected(model: WorkerModel) -> None:
    _germinate(model)
    model.begin_epoch(1)
    outcome = model.apply_command(
        command(C.GERMINATE, blueprint_id="depthwise", target_slot_id="block2_post")
    )
    assert outcome.outcome is AckOutcome.REJECTED
    assert outcome.reason == "illegal_transition"
    assert "TRAINING -> GERMINATED" in outcome.detail
    assert _kinds(outcome) == [E.COMMAND_FAILED]
    assert model.slots["block2_post"].blueprint_id == "norm" and model.germinations == 1
    assert_wire_valid(outcome)


def test_germinate_an_unknown_blueprint_is_rejected(model: WorkerModel) -> None:
    outcome = model.apply_command(
        command(C.GERMINATE, blueprint_id="lora", target_slot_id="block2_post")
    )
    assert (outcome.outcome, outcome.reason) == (AckOutcome.REJECTED, "unknown_blueprint")
    assert model.slots["block2_post"].stage is S.DORMANT


def test_germinate_without_a_slot_takes_the_first_free_one(model: WorkerModel) -> None:
    _germinate(model, "block2_post")
    outcome = model.apply_command(command(C.GERMINATE, blueprint_id="norm", target_seed_id="new"))
    assert outcome.applied and outcome.slot_id == "block3_post"


def test_fossilize_from_training_is_rejected(model: WorkerModel) -> None:
    seed_id = _germinate(model)
    model.begin_epoch(1)
    outcome = model.apply_command(
        command(C.ADVANCE_STAGE, target_seed_id=seed_id, target_stage=S.FOSSILIZED)
    )
    assert (outcome.outcome, outcome.reason) == (AckOutcome.REJECTED, "illegal_transition")
    assert outcome.stage_after is S.TRAINING
    assert model.slots["block2_post"].stage is S.TRAINING


def test_advance_whose_gate_fails_is_rejected_with_the_failed_checks(model: WorkerModel) -> None:
    seed_id = _germinate(model)
    model.begin_epoch(1)
    outcome = model.apply_command(command(C.ADVANCE_STAGE, target_seed_id=seed_id))
    assert (outcome.outcome, outcome.reason) == (AckOutcome.REJECTED, "gate_failed")
    assert outcome.detail.startswith("G2 failed: improvement, epochs_in_stage")
    assert model.slots["block2_post"].stage is S.TRAINING
    assert_wire_valid(outcome)


def test_fossilize_from_probation_passes_g5_only_with_improvement(model: WorkerModel) -> None:
    seed_id = _germinate(model)
    _to_probation(model, seed_id)
    slot = model.slots["block2_post"]
    fossilize = command(C.ADVANCE_STAGE, target_seed_id=seed_id, target_stage=S.FOSSILIZED)
    refused = model.apply_command(fossilize)
    assert (refused.reason, refused.stage_after) == ("gate_failed", S.PROBATIONARY)
    assert "total_improvement" in refused.detail
    slot.metrics.total_improvement = 1.5
    outcome = model.apply_command(fossilize)
    assert outcome.applied and outcome.stage_after is S.FOSSILIZED
    assert _kinds(outcome) == [E.SEED_STAGE_CHANGED, E.SEED_FOSSILIZED, E.COMMAND_EXECUTED]
    report = outcome.field_report
    assert report is not None and report.success and report.final_stage is S.FOSSILIZED
    assert fossilize.command_id in report.commands_received
    assert slot.alpha == 1.0
    again = model.apply_command(
        command(C.GERMINATE, blueprint_id="norm", target_slot_id="block2_post")
    )
    assert again.reason == "illegal_transition"  # a fossilized seed keeps its slot
    assert_wire_valid(outcome)


def test_cull_ends_the_seed_with_a_field_report(model: WorkerModel) -> None:
    seed_id = _germinate(model)
    model.begin_epoch(1)
    outcome = model.apply_command(command(C.CULL, target_seed_id=seed_id, reason="no gain"))
    assert outcome.applied and outcome.stage_after is S.CULLED
    assert _kinds(outcome) == [E.SEED_STAGE_CHANGED, E.SEED_CULLED, E.COMMAND_EXECUTED]
    report = outcome.field_report
    assert report is not None and not report.success
    assert (report.failure_stage, report.failure_reason) == (S.TRAINING, "no gain")
    assert_wire_valid(outcome)


def test_cull_of_an_empty_slot_or_unknown_seed_is_rejected(model: WorkerModel) -> None:
    empty = model.apply_command(command(C.CULL, target_slot_id="block2_post"))
    assert (empty.outcome, empty.reason) == (AckOutcome.REJECTED, "illegal_transition")
    unknown = model.apply_command(command(C.CULL, target_seed_id="w1-block2_post-9"))
    assert (unknown.reason, unknown.slot_id) == ("unknown_target", None)
    nowhere = model.apply_command(command(C.CULL, target_slot_id="block9_post"))
    assert nowhere.reason == "unknown_target" and "block9_post" in nowhere.detail
    assert_wire_valid(nowhere)


def test_a_slot_and_seed_that_disagree_are_rejected(model: WorkerModel) -> None:
    _germinate(model)
    outcome = model.apply_command(
        command(C.CULL, target_slot_id="block2_post", target_seed_id="w1-block2_post-7")
    )
    assert outcome.reason == "unknown_target"
    assert model.slots["block2_post"].stage is S.GERMINATED


def test_set_alpha_clamps_and_pins_and_needs_a_live_seed(model: WorkerModel) -> None:
    seed_id = _germinate(model)
    outcome = model.apply_command(command(C.SET_ALPHA, target_seed_id=seed_id, alpha_value=0.4))
    slot = model.slots["block2_post"]
    assert outcome.applied and slot.alpha == 0.4 and slot.alpha_pinned
    empty = model.apply_command(command(C.SET_ALPHA, target_slot_id="block3_post", alpha_value=0.4))
    assert (empty.outcome, empty.reason) == (AckOutcome.REJECTED, "unknown_target")


def test_set_learning_rate_changes_only_that_seeds_group(model: WorkerModel) -> None:
    seed_id = _germinate(model)
    outcome = model.apply_command(
        command(C.SET_LEARNING_RATE, target_seed_id=seed_id, learning_rate=0.05)
    )
    assert outcome.applied
    assert model.seed_learning_rate("block2_post") == 0.05
    assert model.optimizer.param_groups[0]["lr"] == model.training.learning_rate


def test_pause_freezes_the_seed_and_resume_releases_it(make_trainer) -> None:  # type: ignore[no-untyped-def]
    trainer: Trainer = make_trainer()
    model = trainer.model
    seed_id = _germinate(model, blueprint="conv_enhance")
    model.begin_epoch(1)
    slot = model.slots["block2_post"]

    def seed_weights() -> list[torch.Tensor]:
        return [p.detach().clone() for p in slot.seed_parameters()]

    assert model.apply_command(command(C.PAUSE_SEED, target_seed_id=seed_id)).applied
    before = seed_weights()
    trainer.tick()
    assert all(torch.equal(a, b) for a, b in zip(before, seed_weights(), strict=True))
    assert slot.metrics.epochs_in_current_stage == 0
    assert model.apply_command(command(C.RESUME_SEED, target_seed_id=seed_id)).applied
    trainer.tick()
    assert any(not torch.equal(a, b) for a, b in zip(before, seed_weights(), strict=True))
    assert slot.metrics.epochs_in_current_stage == 1


def test_request_state_reports_every_slot(model: WorkerModel) -> None:
    _germinate(model, "block3_post")
    outcome = model.apply_command(command(C.REQUEST_STATE))
    assert outcome.applied and outcome.stage_after is None
    assert [(r.slot_id, r.stage) for r in outcome.reports] == [
        ("block2_post", S.DORMANT),
        ("block3_post", S.GERMINATED),
    ]
    assert _kinds(outcome) == [E.COMMAND_EXECUTED]
    assert_wire_valid(outcome)


def test_a_culled_slot_is_reset_and_reused_with_its_optimizer_state_dropped(
    model: WorkerModel,
) -> None:
    seed_id = _germinate(model, blueprint="depthwise")
    slot = model.slots["block2_post"]
    old_params = slot.seed_parameters()
    for p in old_params:  # as if trained: optimiser state exists for the seed
        model.optimizer.state[p] = {"step": torch.tensor(1.0)}
    model.apply_command(command(C.CULL, target_seed_id=seed_id))
    stages = []
    for epoch in range(1, 7):
        model.begin_epoch(epoch)
        model.end_epoch(epoch, 50.0)
        stages.append(slot.stage)
    assert stages == [S.EMBARGOED, S.EMBARGOED, S.EMBARGOED, S.RESETTING, S.DORMANT, S.DORMANT]
    assert len(model.optimizer.param_groups) == 1
    assert not any(p in model.optimizer.state for p in old_params)
    assert _germinate(model, blueprint="norm") == "w1-block2_post-2"
    assert len(model.optimizer.param_groups) == 2


@pytest.mark.parametrize("stage", [S.EMBARGOED, S.RESETTING])
def test_commands_on_a_cooling_slot_are_rejected(model: WorkerModel, stage: SeedStage) -> None:
    seed_id = _germinate(model)
    model.apply_command(command(C.CULL, target_seed_id=seed_id))
    epoch = 0
    while model.slots["block2_post"].stage is not stage:
        epoch += 1
        model.end_epoch(epoch, 50.0)
    for cmd in (
        command(C.GERMINATE, blueprint_id="norm", target_slot_id="block2_post"),
        command(C.CULL, target_slot_id="block2_post"),
        command(C.PAUSE_SEED, target_slot_id="block2_post"),
    ):
        outcome = model.apply_command(cmd)
        assert outcome.outcome is AckOutcome.REJECTED, cmd.command_type
    assert model.slots["block2_post"].stage is stage


def test_a_command_that_fails_while_applied_is_rejected_never_raised(
    model: WorkerModel,
) -> None:
    def exploding(channels: int) -> nn.Module:
        raise RuntimeError(f"no seed fits {channels} channels")

    register_blueprint("cnn", "exploding", exploding, 1)
    try:
        outcome = model.apply_command(
            command(C.GERMINATE, blueprint_id="exploding", target_slot_id="block2_post")
        )
    finally:
        unregister_blueprint("cnn", "exploding")

    assert (outcome.outcome, outcome.reason) == (AckOutcome.REJECTED, "apply_failed")
    assert outcome.detail.startswith("RuntimeError: no seed fits")
    assert _kinds(outcome) == [E.COMMAND_FAILED]
    assert model.slots["block2_post"].stage is S.DORMANT and model.germinations == 0
    assert_wire_valid(outcome)


@pytest.mark.parametrize("rate", [MAX_LEARNING_RATE * 2, 1e300])
def test_a_learning_rate_that_would_overflow_training_is_refused_by_the_contract(
    rate: float,
) -> None:
    bounded = command(C.SET_LEARNING_RATE, target_slot_id="block2_post", learning_rate=0.5)
    raw = msgspec.to_builtins(bounded)
    raw["learning_rate"] = rate
    with pytest.raises(ContractError) as refused:
        decode(msgspec.msgpack.encode(raw))
    assert refused.value.reason is RejectReason.INVALID_VALUE
    assert refused.value.path == "$.learning_rate"
