"""The heuristic's rules on hand-built scenarios, each checked against the spec's outcome."""

from __future__ import annotations

import msgspec
import pytest
import torch
from controller_signals import make_signal
from reference_heuristic import ReferenceHeuristic, reference_legal_actions

from leyline import FastTrainingSignals, SeedStage
from services.controller import (
    DEFAULT_THRESHOLDS,
    ActionLayout,
    ActionMasker,
    ColumnBuffer,
    DecisionReason,
    HeuristicPolicy,
    HeuristicThresholds,
    ObservationBatch,
)

Outcome = tuple[str, float, DecisionReason]

EMPTY_PLATEAU = {"epoch": 10, "plateau_epochs": 3}


class Driver:
    """Runs the tensor policy and the reference side by side on one row and checks they agree."""

    def __init__(
        self,
        layout: ActionLayout,
        thresholds: HeuristicThresholds = DEFAULT_THRESHOLDS,
        rotation: tuple[str, ...] | None = None,
    ) -> None:
        self.layout = layout
        self.policy = HeuristicPolicy(layout, thresholds, rotation)
        self.policy.reserve(1)
        self.reference = ReferenceHeuristic(layout, thresholds, self.policy.rotation)
        self.columns = ColumnBuffer(1, "cpu")
        self.masker = ActionMasker(layout)

    def step(self, **fields: object) -> Outcome:
        signal = make_signal(**fields)
        return self.decide(signal)

    def decide(self, signal: FastTrainingSignals) -> Outcome:
        columns = self.columns.fill([signal], [0])
        with torch.inference_mode():
            out = self.policy(ObservationBatch(torch.zeros(1, 27), columns), self.masker(columns))
        action, confidence, reason = (
            int(out.actions[0]),
            float(out.confidence[0]),
            DecisionReason(int(out.reasons[0])),
        )
        legal = reference_legal_actions(self.layout, signal)
        assert self.reference.decide(0, signal, legal) == (action, confidence, reason)
        return self.layout.action(action).name, confidence, reason

    def germinate_then_cull(self, epoch: int) -> str:
        """Germinate on a plateau, then cull it in probation; the blueprint it tried."""
        name, _, _ = self.step(epoch=epoch, plateau_epochs=3)
        assert name.startswith("GERMINATE_")
        culled = self.step(epoch=epoch + 1, seed_stage=SeedStage.PROBATIONARY, val_accuracy=0.0)
        assert culled[0] == "CULL"
        return name


def test_waits_while_warming_up(layout: ActionLayout) -> None:
    driver = Driver(layout)
    assert driver.step(epoch=4, plateau_epochs=9) == ("WAIT", 1.0, DecisionReason.WARMING_UP)


def test_waits_without_plateau(layout: ActionLayout) -> None:
    driver = Driver(layout)
    assert driver.step(epoch=9, plateau_epochs=2) == ("WAIT", 1.0, DecisionReason.NO_PLATEAU)


def test_germinates_on_plateau_with_confidence_from_its_length(layout: ActionLayout) -> None:
    driver = Driver(layout)
    assert driver.step(**EMPTY_PLATEAU) == ("GERMINATE_CONV_ENHANCE", 0.6, DecisionReason.PLATEAU)


def test_germinations_follow_the_cnn_rotation(layout: ActionLayout) -> None:
    driver = Driver(layout)
    chosen = []
    for epoch in range(10, 15):
        name, _, _ = driver.step(epoch=epoch, plateau_epochs=7)
        chosen.append(name)
    assert chosen == [
        "GERMINATE_CONV_ENHANCE",
        "GERMINATE_ATTENTION",
        "GERMINATE_NORM",
        "GERMINATE_DEPTHWISE",
        "GERMINATE_CONV_ENHANCE",
    ]


def test_waits_five_epochs_after_a_cull(layout: ActionLayout) -> None:
    driver = Driver(layout)
    driver.germinate_then_cull(epoch=9)
    assert driver.step(epoch=14, plateau_epochs=3)[2] is DecisionReason.CULL_COOLDOWN
    assert driver.step(epoch=15, plateau_epochs=3)[0] == "GERMINATE_ATTENTION"


@pytest.mark.parametrize("stage", [SeedStage.TRAINING, SeedStage.BLENDING, SeedStage.SHADOWING])
def test_culls_a_developing_seed_that_regresses(layout: ActionLayout, stage: SeedStage) -> None:
    driver = Driver(layout)
    regressing = {"seed_stage": stage, "seed_epochs_in_stage": 5, "seed_improvement": -2.5}
    assert driver.step(**regressing) == ("CULL", 1.0, DecisionReason.SEED_REGRESSING)


@pytest.mark.parametrize(("epochs_in_stage", "improvement"), [(4, -9.0), (5, -2.0), (9, 0.5)])
def test_lets_a_developing_seed_develop(
    layout: ActionLayout, epochs_in_stage: int, improvement: float
) -> None:
    driver = Driver(layout)
    outcome = driver.step(
        seed_stage=SeedStage.TRAINING,
        seed_epochs_in_stage=epochs_in_stage,
        seed_improvement=improvement,
    )
    assert outcome == ("WAIT", 1.0, DecisionReason.SEED_DEVELOPING)


def test_waits_on_a_germinated_seed(layout: ActionLayout) -> None:
    driver = Driver(layout)
    assert driver.step(seed_stage=SeedStage.GERMINATED, seed_epochs_in_stage=9)[2] is (
        DecisionReason.SEED_GERMINATED
    )


def test_fossilizes_a_probationary_seed_that_improved_since_germination(
    layout: ActionLayout,
) -> None:
    driver = Driver(layout)
    driver.step(epoch=10, plateau_epochs=3, val_accuracy=60.0)
    outcome = driver.step(
        epoch=20, seed_stage=SeedStage.PROBATIONARY, val_accuracy=62.0, seed_improvement=-1.0
    )
    assert outcome == ("FOSSILIZE", (62.0 - 60.0) / 5.0, DecisionReason.SEED_IMPROVED)


def test_culls_a_probationary_seed_that_did_not_improve(layout: ActionLayout) -> None:
    driver = Driver(layout)
    driver.step(epoch=10, plateau_epochs=3, val_accuracy=60.0)
    outcome = driver.step(epoch=20, seed_stage=SeedStage.PROBATIONARY, val_accuracy=60.0)
    assert outcome == ("CULL", 1.0, DecisionReason.SEED_NOT_IMPROVED)


def test_uses_stage_improvement_for_a_seed_it_did_not_germinate(layout: ActionLayout) -> None:
    driver = Driver(layout)
    outcome = driver.step(seed_stage=SeedStage.PROBATIONARY, seed_improvement=10.0)
    assert outcome == ("FOSSILIZE", 1.0, DecisionReason.SEED_IMPROVED)


def test_an_illegal_germination_waits_and_keeps_the_rotation(layout: ActionLayout) -> None:
    driver = Driver(layout)
    no_slot = driver.step(**EMPTY_PLATEAU, available_slots=0)
    fossilized = driver.step(**EMPTY_PLATEAU, seed_stage=SeedStage.FOSSILIZED)
    assert no_slot == fossilized == ("WAIT", 1.0, DecisionReason.ILLEGAL_PROPOSAL)
    assert driver.step(**EMPTY_PLATEAU)[0] == "GERMINATE_CONV_ENHANCE"


def test_a_cull_penalises_the_culled_blueprint(layout: ActionLayout) -> None:
    driver = Driver(layout)
    driver.germinate_then_cull(epoch=9)
    rotation = driver.policy.rotation
    assert driver.policy.penalties[0].tolist() == [
        2.0 if n == "conv_enhance" else 0.0 for n in rotation
    ]
    driver.step(epoch=20, plateau_epochs=3)
    assert driver.policy.penalties[0, rotation.index("conv_enhance")].item() == 1.0


def test_a_heavily_penalised_blueprint_is_skipped(layout: ActionLayout) -> None:
    # The penalty lands exactly on the skip level: "at or above" skips.
    limits = HeuristicThresholds(cull_penalty=2.0, penalty_decay=1.0, penalty_skip_at=2.0)
    driver = Driver(layout, limits, rotation=("norm", "attention"))
    assert driver.germinate_then_cull(epoch=9) == "GERMINATE_NORM"
    assert driver.step(epoch=20, plateau_epochs=3)[0] == "GERMINATE_ATTENTION"
    # The seed went away without a cull; the rotation is back at norm, which is skipped.
    assert driver.step(epoch=30, plateau_epochs=3)[0] == "GERMINATE_ATTENTION"


def test_when_every_blueprint_is_penalised_the_lowest_is_chosen(layout: ActionLayout) -> None:
    limits = HeuristicThresholds(
        cull_penalty=5.0, penalty_decay=0.75, penalty_skip_at=2.0, cull_cooldown_epochs=0
    )
    driver = Driver(layout, limits, rotation=("norm", "attention"))
    assert driver.germinate_then_cull(epoch=9) == "GERMINATE_NORM"
    assert driver.germinate_then_cull(epoch=20) == "GERMINATE_ATTENTION"
    # norm decays to 5 * 0.75 ** 2, attention to 5 * 0.75: both over 2.0, norm the lowest.
    assert driver.step(epoch=30, plateau_epochs=3)[0] == "GERMINATE_NORM"


def test_a_penalty_at_the_floor_is_kept_and_one_below_dropped(layout: ActionLayout) -> None:
    limits = HeuristicThresholds(penalty_floor=0.5)
    driver = Driver(layout, limits, rotation=("norm", "attention"))
    driver.germinate_then_cull(epoch=9)
    remaining = []
    for epoch in (20, 30, 40):
        driver.step(epoch=epoch, plateau_epochs=3)
        remaining.append(driver.policy.penalties[0, 0].item())
    assert remaining == [1.0, 0.5, 0.0]


def test_thresholds_are_validated_data() -> None:
    with pytest.raises(msgspec.ValidationError, match="cull_penalty"):
        msgspec.convert({"cull_penalty": -1.0}, HeuristicThresholds)


def test_rotation_names_must_be_blueprints_of_the_topology(layout: ActionLayout) -> None:
    with pytest.raises(KeyError, match="lora"):
        HeuristicPolicy(layout, rotation=("lora",))


def test_transformer_rotation_defaults_to_its_own_catalogue() -> None:
    policy = HeuristicPolicy(ActionLayout("transformer"))
    assert policy.rotation == ("norm", "lora", "attention", "mlp")
