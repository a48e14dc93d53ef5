"""The lifecycle guard: tracks each (worker, slot) stage and judges proposed moves."""

from __future__ import annotations

import msgspec

from leyline.commands import AdaptationCommand, CommandType
from leyline.errors import RejectReason
from leyline.lifecycle import SeedStage, is_live_stage, is_valid_transition, next_stage

SlotKey = tuple[str, str]

_NEEDS_LIVE_SEED = frozenset(
    {
        CommandType.SET_ALPHA,
        CommandType.SET_LEARNING_RATE,
        CommandType.PAUSE_SEED,
        CommandType.RESUME_SEED,
    }
)


class Verdict(msgspec.Struct, frozen=True):
    """Allowed, or refused with a reason and a sentence naming the stages involved."""

    allowed: bool
    from_stage: SeedStage
    to_stage: SeedStage | None
    reason: RejectReason | None = None
    detail: str = ""


def _allow(from_stage: SeedStage, to_stage: SeedStage | None) -> Verdict:
    return Verdict(True, from_stage, to_stage)


def _refuse(
    reason: RejectReason, from_stage: SeedStage, to_stage: SeedStage | None, detail: str
) -> Verdict:
    return Verdict(False, from_stage, to_stage, reason, detail)


class LifecycleGuard:
    """Tracks the stage of every (worker, slot) it has seen and says which moves are legal.

    An unseen slot is UNKNOWN. Workers guard the commands they receive, the controller the
    transitions workers report, the sink the history it stores: the same rules everywhere.
    """

    def __init__(self) -> None:
        self._stages: dict[SlotKey, SeedStage] = {}

    def stage(self, worker: str, slot: str) -> SeedStage:
        return self._stages.get((worker, slot), SeedStage.UNKNOWN)

    def check(self, worker: str, slot: str, to_stage: SeedStage) -> Verdict:
        """Is the move from the slot's current stage to `to_stage` legal?"""
        current = self.stage(worker, slot)
        if is_valid_transition(current, to_stage):
            return _allow(current, to_stage)
        return _refuse(
            RejectReason.ILLEGAL_TRANSITION,
            current,
            to_stage,
            f"{worker}/{slot}: {current.name} -> {to_stage.name} is not a legal transition",
        )

    def apply(self, worker: str, slot: str, to_stage: SeedStage) -> Verdict:
        """Check the move and record it when legal."""
        verdict = self.check(worker, slot, to_stage)
        if verdict.allowed:
            self._stages[(worker, slot)] = to_stage
        return verdict

    def check_reported(
        self, worker: str, slot: str, from_stage: SeedStage, to_stage: SeedStage
    ) -> Verdict:
        """Judge a transition a worker reports; an unseen slot takes the reported origin."""
        tracked = self._stages.get((worker, slot))
        if tracked is not None and tracked is not from_stage:
            return _refuse(
                RejectReason.ILLEGAL_TRANSITION,
                tracked,
                to_stage,
                f"{worker}/{slot}: reported {from_stage.name} -> {to_stage.name}, "
                f"but the slot is in {tracked.name}",
            )
        if not is_valid_transition(from_stage, to_stage):
            return _refuse(
                RejectReason.ILLEGAL_TRANSITION,
                from_stage,
                to_stage,
                f"{worker}/{slot}: {from_stage.name} -> {to_stage.name} is not a legal transition",
            )
        return _allow(from_stage, to_stage)

    def record(self, worker: str, slot: str, stage: SeedStage) -> None:
        """Set a slot's stage without judging it (a snapshot, a restored checkpoint)."""
        self._stages[(worker, slot)] = stage

    def forget(self, worker: str) -> None:
        for key in [key for key in self._stages if key[0] == worker]:
            del self._stages[key]

    def check_command(self, worker: str, slot: str, command: AdaptationCommand) -> Verdict:
        """Would carrying out `command` on this slot be legal?"""
        current = self.stage(worker, slot)
        kind = command.command_type
        if kind is CommandType.REQUEST_STATE:
            return _allow(current, None)
        if kind in _NEEDS_LIVE_SEED:
            if is_live_stage(current):
                return _allow(current, None)
            return _refuse(
                RejectReason.UNKNOWN_TARGET,
                current,
                None,
                f"{worker}/{slot}: {kind.name} needs a live seed, the slot is {current.name}",
            )
        if kind is CommandType.GERMINATE:
            target: SeedStage | None = SeedStage.GERMINATED
            if current is SeedStage.UNKNOWN:
                current = SeedStage.DORMANT
        elif kind is CommandType.CULL:
            target = SeedStage.CULLED
        else:
            # Not `or`: UNKNOWN is 0, and an explicit target must be judged, never replaced.
            explicit = command.target_stage
            target = explicit if explicit is not None else next_stage(current)
        if target is None or not is_valid_transition(current, target):
            shown = target.name if target is not None else "(no successor)"
            return _refuse(
                RejectReason.ILLEGAL_TRANSITION,
                current,
                target,
                f"{worker}/{slot}: {kind.name} would move {current.name} -> {shown}, "
                "which is not a legal transition",
            )
        return _allow(current, target)

    def snapshot(self) -> dict[str, dict[str, int]]:
        """The tracked stages by worker then slot, for a checkpoint."""
        out: dict[str, dict[str, int]] = {}
        for (worker, slot), stage in sorted(self._stages.items()):
            out.setdefault(worker, {})[slot] = int(stage)
        return out

    @classmethod
    def restore(cls, snapshot: dict[str, dict[str, int]]) -> LifecycleGuard:
        guard = cls()
        for worker, slots in snapshot.items():
            for slot, stage in slots.items():
                guard.record(worker, slot, SeedStage(stage))
        return guard
