"""Quality gates G0-G5 (spec 1.4): which gate guards which stage, thresholds, boundaries, scores."""

from __future__ import annotations

import pytest

from leyline import SeedStage
from leyline.gates import DEFAULT_GATE_THRESHOLDS, GateInputs, GateLevel, evaluate_gate, gate_for

S = SeedStage


def inputs(**changes: object) -> GateInputs:
    """Inputs that pass every gate, with `changes` applied."""
    base: dict[str, object] = {
        "seed_id": "seed_1",
        "blueprint_id": "norm",
        "stage": S.GERMINATED,
        "epochs_in_stage": 3,
        "improvement_since_stage_start": 0.5,
        "total_improvement": 1.0,
        "isolation_violations": 10,
        "alpha": 0.95,
        "is_healthy": True,
    }
    return GateInputs(**{**base, **changes})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("target", "gate"),
    [
        (S.GERMINATED, GateLevel.G0),
        (S.TRAINING, GateLevel.G1),
        (S.BLENDING, GateLevel.G2),
        (S.SHADOWING, GateLevel.G3),
        (S.PROBATIONARY, GateLevel.G4),
        (S.FOSSILIZED, GateLevel.G5),
        (S.UNKNOWN, GateLevel.G0),
        (S.DORMANT, GateLevel.G0),
        (S.CULLED, GateLevel.G0),
        (S.EMBARGOED, GateLevel.G0),
        (S.RESETTING, GateLevel.G0),
    ],
)
def test_each_target_stage_has_its_gate_and_others_fall_back_to_g0(
    target: SeedStage, gate: GateLevel
) -> None:
    assert gate_for(target) is gate
    assert evaluate_gate(target, inputs(stage=S.SHADOWING)).gate is gate


def test_gate_levels_have_the_spec_values() -> None:
    assert [(g.name, g.value) for g in GateLevel] == [(f"G{i}", i) for i in range(6)]


def test_default_thresholds_are_the_spec_values() -> None:
    t = DEFAULT_GATE_THRESHOLDS
    assert t.min_training_improvement == 0.5
    assert t.min_blending_epochs == 3
    assert t.max_isolation_violations == 10
    assert t.min_blend_alpha == 0.95
    assert t.min_shadowing_correlation == 0.9
    assert t.min_probation_stability == 0.95


@pytest.mark.parametrize(
    ("seed_id", "blueprint_id", "passed"),
    [("seed_1", "norm", True), ("", "norm", False), ("seed_1", "", False), ("", "", False)],
)
def test_g0_needs_seed_and_blueprint_ids(seed_id: str, blueprint_id: str, passed: bool) -> None:
    result = evaluate_gate(S.GERMINATED, inputs(seed_id=seed_id, blueprint_id=blueprint_id))
    assert result.passed is passed
    assert result.score == float(passed)


@pytest.mark.parametrize("stage", list(SeedStage))
def test_g1_passes_only_from_germinated(stage: SeedStage) -> None:
    result = evaluate_gate(S.TRAINING, inputs(stage=stage))
    assert result.passed is (stage is S.GERMINATED)
    assert result.score == float(stage is S.GERMINATED)


@pytest.mark.parametrize(
    ("changes", "passed", "failed_check"),
    [
        ({"improvement_since_stage_start": 0.5}, True, None),
        ({"improvement_since_stage_start": 0.49}, False, "improvement"),
        ({"isolation_violations": 10}, True, None),
        ({"isolation_violations": 11}, False, "isolation"),
        ({"epochs_in_stage": 3}, True, None),
        ({"epochs_in_stage": 2}, False, "epochs_in_stage"),
    ],
)
def test_g2_boundaries(changes: dict[str, object], passed: bool, failed_check: str | None) -> None:
    result = evaluate_gate(S.BLENDING, inputs(**changes))
    assert result.passed is passed
    assert result.checks_failed == ([failed_check] if failed_check else [])
    assert len(result.checks_passed) + len(result.checks_failed) == 3


@pytest.mark.parametrize(
    ("improvement", "score"),
    [(-3.0, 0.0), (0.0, 0.0), (0.5, 0.1), (2.5, 0.5), (5.0, 1.0), (40.0, 1.0)],
)
def test_g2_score_is_improvement_over_5_capped_at_1(improvement: float, score: float) -> None:
    result = evaluate_gate(S.BLENDING, inputs(improvement_since_stage_start=improvement))
    assert result.score == pytest.approx(score)


@pytest.mark.parametrize(
    ("epochs", "alpha", "passed"),
    [(3, 0.95, True), (2, 0.95, False), (3, 0.9499, False), (10, 1.0, True)],
)
def test_g3_needs_dwell_and_alpha_and_scores_alpha(epochs: int, alpha: float, passed: bool) -> None:
    result = evaluate_gate(S.SHADOWING, inputs(epochs_in_stage=epochs, alpha=alpha))
    assert result.passed is passed
    assert result.score == alpha


@pytest.mark.parametrize("stage", list(SeedStage))
def test_g4_passes_only_from_shadowing(stage: SeedStage) -> None:
    result = evaluate_gate(S.PROBATIONARY, inputs(stage=stage))
    assert result.passed is (stage is S.SHADOWING)
    assert result.score == float(stage is S.SHADOWING)


@pytest.mark.parametrize(
    ("total", "healthy", "passed", "score"),
    [
        (0.0, True, False, 0.0),
        (-1.0, True, False, 0.0),
        (1e-9, True, True, 1e-10),
        (5.0, True, True, 0.5),
        (25.0, True, True, 1.0),
        (5.0, False, False, 0.5),
    ],
)
def test_g5_needs_positive_total_improvement_and_health(
    total: float, healthy: bool, passed: bool, score: float
) -> None:
    result = evaluate_gate(S.FOSSILIZED, inputs(total_improvement=total, is_healthy=healthy))
    assert result.passed is passed
    assert result.score == pytest.approx(score)


def test_a_failed_gate_names_its_failed_checks_in_the_message() -> None:
    result = evaluate_gate(S.BLENDING, inputs(improvement_since_stage_start=0.0, epochs_in_stage=0))
    assert result.checks_failed == ["improvement", "epochs_in_stage"]
    assert result.message == "failed: improvement, epochs_in_stage"
    assert evaluate_gate(S.BLENDING, inputs()).message == "passed"
