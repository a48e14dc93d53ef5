"""LifecycleGuard against a reference model: a dict of slot stages and the spec's edge table."""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from leyline import (
    AdaptationCommand,
    CommandType,
    LifecycleGuard,
    RejectReason,
    SeedStage,
    Verdict,
    new_id,
)

S = SeedStage

# The spec's table 1.2, written out here rather than read from leyline.
EDGES: dict[SeedStage, tuple[SeedStage, ...]] = {
    S.UNKNOWN: (S.DORMANT,),
    S.DORMANT: (S.GERMINATED,),
    S.GERMINATED: (S.TRAINING, S.CULLED),
    S.TRAINING: (S.BLENDING, S.CULLED),
    S.BLENDING: (S.SHADOWING, S.CULLED),
    S.SHADOWING: (S.PROBATIONARY, S.CULLED),
    S.PROBATIONARY: (S.FOSSILIZED, S.CULLED),
    S.FOSSILIZED: (),
    S.CULLED: (S.EMBARGOED,),
    S.EMBARGOED: (S.RESETTING,),
    S.RESETTING: (S.DORMANT,),
}
FAILURE = {S.CULLED, S.EMBARGOED, S.RESETTING}
LIVE = {S.GERMINATED, S.TRAINING, S.BLENDING, S.SHADOWING, S.PROBATIONARY}
PARAMETER_COMMANDS = {
    CommandType.SET_ALPHA,
    CommandType.SET_LEARNING_RATE,
    CommandType.PAUSE_SEED,
    CommandType.RESUME_SEED,
}

workers = st.sampled_from(["w1", "w2", "w10"])
slots = st.sampled_from(["block2_post", "block3_post"])
stages = st.sampled_from(list(SeedStage))


@st.composite
def commands(draw: st.DrawFn) -> AdaptationCommand:
    kind = draw(st.sampled_from(list(CommandType)))
    return AdaptationCommand(
        command_id=new_id(),
        command_type=kind,
        target_slot_id="block2_post",
        blueprint_id="norm",
        target_stage=draw(st.none() | stages),
        alpha_value=0.5,
        learning_rate=0.01,
    )


def expected_move(current: SeedStage, command: AdaptationCommand) -> tuple[bool, SeedStage | None]:
    """The reference answer for a command: allowed?, and the stage it would lead to."""
    kind = command.command_type
    if kind is CommandType.REQUEST_STATE:
        return True, None
    if kind in PARAMETER_COMMANDS:
        return current in LIVE, None
    if kind is CommandType.GERMINATE:
        return current in (S.UNKNOWN, S.DORMANT), S.GERMINATED
    if kind is CommandType.CULL:
        return S.CULLED in EDGES[current], S.CULLED
    target = command.target_stage
    if target is None:
        target = next((s for s in EDGES[current] if s not in FAILURE), None)
    return (target is not None and target in EDGES[current]), target


class GuardMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.guard = LifecycleGuard()
        self.model: dict[tuple[str, str], SeedStage] = {}

    def current(self, worker: str, slot: str) -> SeedStage:
        return self.model.get((worker, slot), S.UNKNOWN)

    def assert_move(self, verdict: Verdict, source: SeedStage, target: SeedStage) -> bool:
        legal = target in EDGES[source]
        assert verdict.allowed is legal
        assert verdict.from_stage is source
        assert verdict.to_stage is target
        if legal:
            assert verdict.reason is None
        else:
            assert verdict.reason is RejectReason.ILLEGAL_TRANSITION
            assert source.name in verdict.detail
            assert target.name in verdict.detail
        return legal

    @rule(worker=workers, slot=slots, to_stage=stages)
    def apply(self, worker: str, slot: str, to_stage: SeedStage) -> None:
        verdict = self.guard.apply(worker, slot, to_stage)
        if self.assert_move(verdict, self.current(worker, slot), to_stage):
            self.model[(worker, slot)] = to_stage

    @rule(worker=workers, slot=slots)
    def apply_the_next_stage(self, worker: str, slot: str) -> None:
        """Walk the happy path too, so long lives are explored, not just random jumps."""
        successors = EDGES[self.current(worker, slot)]
        if successors:
            self.apply(worker, slot, successors[0])

    @rule(worker=workers, slot=slots, to_stage=stages)
    def check(self, worker: str, slot: str, to_stage: SeedStage) -> None:
        verdict = self.guard.check(worker, slot, to_stage)
        self.assert_move(verdict, self.current(worker, slot), to_stage)

    @rule(worker=workers, slot=slots, source=stages, to_stage=stages)
    def check_reported(
        self, worker: str, slot: str, source: SeedStage, to_stage: SeedStage
    ) -> None:
        verdict = self.guard.check_reported(worker, slot, source, to_stage)
        tracked = self.model.get((worker, slot))
        if tracked is not None and tracked is not source:
            assert not verdict.allowed
            assert verdict.reason is RejectReason.ILLEGAL_TRANSITION
            assert verdict.from_stage is tracked
        else:
            self.assert_move(verdict, source, to_stage)

    @rule(worker=workers, slot=slots, command=commands())
    def check_command(self, worker: str, slot: str, command: AdaptationCommand) -> None:
        verdict = self.guard.check_command(worker, slot, command)
        allowed, target = expected_move(self.current(worker, slot), command)
        assert verdict.allowed is allowed, (self.current(worker, slot), command, verdict)
        assert verdict.to_stage is target
        if not allowed:
            expected_reason = (
                RejectReason.UNKNOWN_TARGET
                if command.command_type in PARAMETER_COMMANDS
                else RejectReason.ILLEGAL_TRANSITION
            )
            assert verdict.reason is expected_reason
            assert command.command_type.name in verdict.detail

    @rule(worker=workers, slot=slots, stage=stages)
    def record(self, worker: str, slot: str, stage: SeedStage) -> None:
        self.guard.record(worker, slot, stage)
        self.model[(worker, slot)] = stage

    @rule(worker=workers)
    def forget(self, worker: str) -> None:
        self.guard.forget(worker)
        self.model = {key: stage for key, stage in self.model.items() if key[0] != worker}

    @rule()
    def snapshot_and_restore(self) -> None:
        self.guard = LifecycleGuard.restore(self.guard.snapshot())

    @invariant()
    def tracks_the_model(self) -> None:
        expected: dict[str, dict[str, int]] = {}
        for (worker, slot), stage in self.model.items():
            expected.setdefault(worker, {})[slot] = int(stage)
        assert self.guard.snapshot() == expected
        for worker in ("w1", "w2", "w10"):
            for slot in ("block2_post", "block3_post"):
                assert self.guard.stage(worker, slot) is self.current(worker, slot)


GuardMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=30, deadline=None)
test_lifecycle_guard_matches_reference_model = GuardMachine.TestCase


def test_germinate_into_an_unseen_slot_starts_from_dormant() -> None:
    command = AdaptationCommand(command_id=new_id(), target_slot_id="s", blueprint_id="norm")
    verdict = LifecycleGuard().check_command("w1", "s", command)
    assert verdict == Verdict(True, S.DORMANT, S.GERMINATED)


def test_advance_with_an_explicit_target_of_unknown_is_refused() -> None:
    guard = LifecycleGuard()
    guard.record("w1", "s", S.DORMANT)
    command = AdaptationCommand(
        command_id=new_id(),
        command_type=CommandType.ADVANCE_STAGE,
        target_slot_id="s",
        target_stage=S.UNKNOWN,
    )
    verdict = guard.check_command("w1", "s", command)
    assert not verdict.allowed
    assert verdict.to_stage is S.UNKNOWN


def test_a_slot_of_one_worker_is_not_confused_with_a_prefix_sharing_worker() -> None:
    guard = LifecycleGuard()
    guard.apply("w1", "s", S.DORMANT)
    guard.forget("w10")
    assert guard.stage("w1", "s") is S.DORMANT
    assert guard.stage("w10", "s") is S.UNKNOWN
