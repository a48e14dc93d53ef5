"""The tensor heuristic takes exactly the decisions of the plain-Python reference."""

from __future__ import annotations

import math

import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from reference_heuristic import ReferenceHeuristic, reference_legal_actions

from leyline import FastTrainingSignals, SeedStage
from services.controller import (
    ActionLayout,
    ActionMasker,
    ColumnBuffer,
    HeuristicPolicy,
    HeuristicThresholds,
    ObservationBatch,
)
from services.controller.heuristic import default_rotation

LAYOUT = ActionLayout("cnn")
ROWS = 4
_BELOW = math.nextafter(-2.0, -math.inf)
_ABOVE = math.nextafter(-2.0, 0.0)

improvements = st.one_of(
    st.sampled_from([-2.0, _BELOW, _ABOVE, 0.0, 5e-324, -5e-324, -3.0, 1.0]),
    st.floats(-100.0, 100.0),
)
accuracies = st.one_of(
    st.sampled_from([0.0, 50.0, math.nextafter(50.0, 100.0), math.nextafter(50.0, 0.0), 100.0]),
    st.floats(0.0, 100.0),
)


@st.composite
def signals(draw: st.DrawFn) -> FastTrainingSignals:
    # Empty and probationary slots are where germinations and culls (memory updates) happen.
    stage = draw(st.sampled_from([*SeedStage, *[SeedStage.DORMANT] * 4, SeedStage.PROBATIONARY]))
    empty = stage in (SeedStage.UNKNOWN, SeedStage.DORMANT)
    active = draw(st.sampled_from([0, 1])) if draw(st.booleans()) else int(not empty)
    base = FastTrainingSignals.empty().named()
    return FastTrainingSignals.of(
        draw(st.one_of(st.integers(0, 24), st.integers(0, 2**32 - 1))),
        base.global_step,
        base.train_loss,
        base.val_loss,
        base.loss_delta,
        base.train_accuracy,
        draw(accuracies),
        base.accuracy_delta,
        draw(st.integers(0, 7)),
        base.best_val_accuracy,
        base.best_val_loss,
        base.loss_history_5,
        base.accuracy_history_5,
        active,
        stage,
        draw(st.integers(0, 8)),
        base.seed_alpha,
        draw(improvements),
        draw(st.integers(0, 2)),
    )


@st.composite
def thresholds(draw: st.DrawFn) -> HeuristicThresholds:
    """Mostly the spec's numbers; sometimes ones that make the penalty skip reachable."""
    if draw(st.integers(0, 2)) == 0:
        return HeuristicThresholds()
    return HeuristicThresholds(
        cull_cooldown_epochs=draw(st.integers(0, 2)),
        warmup_epochs=draw(st.integers(0, 6)),
        cull_penalty=draw(st.sampled_from([2.0, 3.0, 5.0])),
        penalty_decay=draw(st.sampled_from([0.5, 0.75, 1.0])),
        penalty_floor=draw(st.sampled_from([0.1, 0.5, 1.0])),
        penalty_skip_at=draw(st.sampled_from([0.5, 1.0, 2.0, 3.0])),
    )


rotations = st.one_of(
    st.just(default_rotation(LAYOUT)),
    st.lists(st.sampled_from(list(LAYOUT.germinate)), min_size=1, max_size=4, unique=True).map(
        tuple
    ),
)
#: A step: a batch of distinct rows, each with its signal for this epoch.
steps = st.lists(
    st.dictionaries(st.integers(0, ROWS - 1), signals(), min_size=1, max_size=ROWS),
    min_size=1,
    max_size=30,
)


def _follow(action: int | None, sig: FastTrainingSignals) -> FastTrainingSignals:
    """The slot as the last action left it, so germinate-cull chains build up penalties."""
    if action in LAYOUT.germinate.values():
        return sig.with_values(seed_stage=SeedStage.PROBATIONARY, has_active_seed=1)
    if action == LAYOUT.cull:
        return sig.with_values(seed_stage=SeedStage.DORMANT, has_active_seed=0)
    return sig


@settings(max_examples=150, deadline=None)
@given(thresholds(), rotations, steps)
def test_tensor_heuristic_decides_like_the_reference(
    limits: HeuristicThresholds,
    rotation: tuple[str, ...],
    batches: list[dict[int, FastTrainingSignals]],
) -> None:
    policy = HeuristicPolicy(LAYOUT, limits, rotation)
    policy.reserve(ROWS)
    reference = ReferenceHeuristic(LAYOUT, limits, rotation)
    columns = ColumnBuffer(ROWS, "cpu")
    masker = ActionMasker(LAYOUT)
    taken: dict[int, int] = {}
    for drawn in batches:
        batch = {row: _follow(taken.get(row), sig) for row, sig in drawn.items()}
        rows = list(batch)
        given_signals = list(batch.values())
        cols = columns.fill(given_signals, rows)
        features = torch.zeros((len(rows), 27))
        masks = masker(cols)
        with torch.inference_mode():
            out = policy(ObservationBatch(features, cols), masks)
        expected = [
            reference.decide(row, sig, reference_legal_actions(LAYOUT, sig))
            for row, sig in batch.items()
        ]
        got = list(
            zip(
                out.actions.tolist(),
                out.confidence.tolist(),
                out.reasons.tolist(),
                strict=True,
            )
        )
        assert got == [(a, c, int(r)) for a, c, r in expected]
        taken.update(zip(rows, out.actions.tolist(), strict=True))
    for row, memory in reference.memory.items():
        assert policy.last_cull_epoch[row].item() == memory.last_cull_epoch
        assert policy.position[row].item() == memory.position
        penalties = [memory.penalties.get(name, 0.0) for name in rotation]
        assert policy.penalties[row].tolist() == penalties


@settings(max_examples=150, deadline=None)
@given(st.lists(signals(), min_size=1, max_size=8))
def test_masks_match_the_legality_rules(batch: list[FastTrainingSignals]) -> None:
    masks = ActionMasker(LAYOUT)(ColumnBuffer(8, "cpu").fill(batch, range(len(batch))))
    for row, sig in zip(masks.tolist(), batch, strict=True):
        assert {index for index, legal in enumerate(row) if legal} == reference_legal_actions(
            LAYOUT, sig
        )
