"""Any sequence of commands and epochs: nothing raises, rejections change nothing, and the guard
always agrees with the slots."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from worker_helpers import assert_wire_valid

from leyline import AckOutcome, AdaptationCommand, CommandType, SeedStage, new_id
from services.worker import HostCNN, LifecycleConfig, WorkerModel

_TARGETS = st.sampled_from([*HostCNN.slot_ids, "block9_post"])


@st.composite
def _commands(draw: st.DrawFn) -> AdaptationCommand:
    kind = draw(st.sampled_from(CommandType))
    return AdaptationCommand(
        command_id=new_id(),
        command_type=kind,
        target_slot_id=draw(_TARGETS),
        blueprint_id=draw(st.sampled_from(["norm", "attention", "depthwise", "lora"])),
        target_stage=draw(st.none() | st.sampled_from(SeedStage)),
        alpha_value=draw(st.floats(0.0, 1.0)),
        learning_rate=draw(st.floats(1e-4, 1.0)),
    )


_STEPS = st.lists(st.none() | _commands(), min_size=1, max_size=30)  # None = one epoch


def _state(model: WorkerModel) -> list[tuple[object, ...]]:
    return [
        (s.stage, s.seed_id, s.alpha, s.paused, model.seed_learning_rate(sid))
        for sid, s in model.slots.items()
    ]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=_STEPS, accuracy=st.floats(0.0, 100.0))
def test_commands_and_epochs_in_any_order_keep_the_lifecycle_consistent(
    steps: list[AdaptationCommand | None], accuracy: float
) -> None:
    model = WorkerModel("w1", lifecycle=LifecycleConfig(embargo_epochs=1))
    epoch = 0
    for step in steps:
        if step is None:
            epoch += 1
            model.begin_epoch(epoch)
            model.end_epoch(epoch, accuracy)
        else:
            before = _state(model)
            outcome = model.apply_command(step)
            assert outcome.outcome in (AckOutcome.APPLIED, AckOutcome.REJECTED)
            if outcome.outcome is AckOutcome.REJECTED:
                assert outcome.reason and outcome.detail
                assert _state(model) == before
            assert_wire_valid(outcome)
        for sid, slot in model.slots.items():
            assert model.guard.stage("w1", sid) is slot.stage
            assert (slot.seed is None) == (slot.stage in (SeedStage.DORMANT, SeedStage.RESETTING))
            groups = [g for g in model.optimizer.param_groups if g["slot_id"] == sid]
            assert len(groups) == (slot.seed is not None)
