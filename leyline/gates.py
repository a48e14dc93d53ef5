"""Quality gates G0 to G5: one per target stage, thresholds as data."""

from __future__ import annotations

import enum
from datetime import UTC, datetime

import msgspec

from leyline.lifecycle import SeedStage

__all__ = [
    "DEFAULT_GATE_THRESHOLDS",
    "GateInputs",
    "GateLevel",
    "GateResult",
    "GateThresholds",
    "evaluate_gate",
    "gate_for",
]


class GateLevel(enum.IntEnum):
    """One gate per target stage; any other target falls back to G0."""

    G0 = 0
    G1 = 1
    G2 = 2
    G3 = 3
    G4 = 4
    G5 = 5


_GATE_FOR_TARGET = {
    SeedStage.GERMINATED: GateLevel.G0,
    SeedStage.TRAINING: GateLevel.G1,
    SeedStage.BLENDING: GateLevel.G2,
    SeedStage.SHADOWING: GateLevel.G3,
    SeedStage.PROBATIONARY: GateLevel.G4,
    SeedStage.FOSSILIZED: GateLevel.G5,
}


def gate_for(target: SeedStage) -> GateLevel:
    """The gate guarding entry to `target`."""
    return _GATE_FOR_TARGET.get(target, GateLevel.G0)


class GateThresholds(msgspec.Struct, frozen=True, kw_only=True):
    """The spec's gate thresholds (percentage points, epochs, counts)."""

    min_training_improvement: float = 0.5
    min_blending_epochs: int = 3
    max_isolation_violations: int = 10
    min_blend_alpha: float = 0.95
    min_shadowing_correlation: float = 0.9
    min_probation_stability: float = 0.95


DEFAULT_GATE_THRESHOLDS = GateThresholds()


class GateInputs(msgspec.Struct, frozen=True, kw_only=True):
    """What a gate looks at: the seed's identity, stage and metrics."""

    seed_id: str
    blueprint_id: str
    stage: SeedStage
    epochs_in_stage: int = 0
    improvement_since_stage_start: float = 0.0
    total_improvement: float = 0.0
    isolation_violations: int = 0
    alpha: float = 0.0
    is_healthy: bool = True


def _now() -> datetime:
    return datetime.now(UTC)


class GateResult(msgspec.Struct, kw_only=True):
    """The outcome of one gate check, with the checks that passed and failed by name."""

    gate: GateLevel
    passed: bool
    score: float = 0.0
    checks_passed: list[str] = msgspec.field(default_factory=list)
    checks_failed: list[str] = msgspec.field(default_factory=list)
    message: str = ""
    timestamp: datetime = msgspec.field(default_factory=_now)


def _result(gate: GateLevel, checks: dict[str, bool], score: float) -> GateResult:
    failed = [name for name, ok in checks.items() if not ok]
    return GateResult(
        gate=gate,
        passed=not failed,
        score=score,
        checks_passed=[name for name, ok in checks.items() if ok],
        checks_failed=failed,
        message="passed" if not failed else "failed: " + ", ".join(failed),
    )


def evaluate_gate(
    target: SeedStage,
    inputs: GateInputs,
    thresholds: GateThresholds = DEFAULT_GATE_THRESHOLDS,
) -> GateResult:
    """Run the gate guarding entry to `target` against `inputs`."""
    gate = gate_for(target)
    t = thresholds
    if gate is GateLevel.G1:
        ok = inputs.stage is SeedStage.GERMINATED
        return _result(gate, {"stage_is_germinated": ok}, float(ok))
    if gate is GateLevel.G2:
        improvement = inputs.improvement_since_stage_start
        checks = {
            "improvement": improvement >= t.min_training_improvement,
            "isolation": inputs.isolation_violations <= t.max_isolation_violations,
            "epochs_in_stage": inputs.epochs_in_stage >= t.min_blending_epochs,
        }
        return _result(gate, checks, min(1.0, improvement / 5.0) if improvement > 0 else 0.0)
    if gate is GateLevel.G3:
        checks = {
            "epochs_in_stage": inputs.epochs_in_stage >= t.min_blending_epochs,
            "alpha": inputs.alpha >= t.min_blend_alpha,
        }
        return _result(gate, checks, inputs.alpha)
    if gate is GateLevel.G4:
        ok = inputs.stage is SeedStage.SHADOWING
        return _result(gate, {"stage_is_shadowing": ok}, float(ok))
    if gate is GateLevel.G5:
        total = inputs.total_improvement
        checks = {"total_improvement": total > 0, "healthy": inputs.is_healthy}
        return _result(gate, checks, min(1.0, total / 10.0) if total > 0 else 0.0)
    ok = bool(inputs.seed_id) and bool(inputs.blueprint_id)
    return _result(gate, {"identity": ok}, float(ok))
