"""The heuristic policy of spec section 8 (tamiyo), as vectorised tensor rules.

Every rule is a tensor expression over the whole batch, and the controller's memory for
each (worker, slot) row (last cull epoch, blueprint penalties, rotation position, the
live seed's blueprint and the accuracy when it germinated) lives in tensors on the policy's
device, so a batch is decided in one pass with no per-row Python.

Rules compare raw float64 values (`Column`), so thresholds are exact. "Total improvement"
for a PROBATIONARY seed is val accuracy minus the val accuracy when this controller
germinated it; for a seed it did not germinate (unknown blueprint) the stage improvement
stands in.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

import msgspec
import torch

from leyline import SeedStage
from services.controller.columns import Column, ObservationBatch
from services.controller.layout import ActionLayout
from services.controller.policy import ControlPolicy, DecisionReason, PolicyOutput

NonNegative = Annotated[float, msgspec.Meta(ge=0.0)]
Positive = Annotated[float, msgspec.Meta(gt=0.0)]
Epochs = Annotated[int, msgspec.Meta(ge=0)]

#: The spec's rotation per topology; a topology without one rotates in catalogue order.
DEFAULT_ROTATIONS: dict[str, tuple[str, ...]] = {
    "cnn": ("conv_enhance", "attention", "norm", "depthwise"),
}


class HeuristicThresholds(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The numbers of the heuristic, as data; defaults are the spec's."""

    cull_cooldown_epochs: Epochs = 5
    warmup_epochs: Epochs = 5
    plateau_epochs_to_germinate: Epochs = 3
    #: Germinate confidence is min(1, plateau_epochs / this).
    germinate_confidence_epochs: Positive = 5.0
    cull_min_epochs_in_stage: Epochs = 5
    #: A developing seed whose stage improvement (pp) is below this is culled.
    cull_improvement_below: float = -2.0
    #: A probationary seed whose total improvement (pp) is above this is fossilized.
    fossilize_improvement_above: float = 0.0
    #: Fossilize confidence is min(1, total improvement / this).
    fossilize_confidence_pp: Positive = 5.0
    cull_penalty: NonNegative = 2.0
    penalty_decay: NonNegative = 0.5
    penalty_floor: NonNegative = 0.1
    penalty_skip_at: NonNegative = 3.0
    #: The last-cull epoch of a row never culled: far enough back to never cool down.
    initial_last_cull_epoch: int = -100


DEFAULT_THRESHOLDS = HeuristicThresholds()

# Per-stage branch of the live-seed rules.
_NO_LIVE_SEED, _GERMINATED, _DEVELOPING, _PROBATION = 0, 1, 2, 3
_BRANCH = {
    SeedStage.GERMINATED: _GERMINATED,
    SeedStage.TRAINING: _DEVELOPING,
    SeedStage.BLENDING: _DEVELOPING,
    SeedStage.SHADOWING: _DEVELOPING,
    SeedStage.PROBATIONARY: _PROBATION,
}


def default_rotation(layout: ActionLayout) -> tuple[str, ...]:
    """The spec's rotation for the topology, else its blueprints in catalogue order."""
    return DEFAULT_ROTATIONS.get(layout.topology, tuple(layout.germinate))


class HeuristicPolicy(ControlPolicy):
    """Tamiyo's rules: germinate on plateau in rotation, cull regressions, fossilize gains."""

    def __init__(
        self,
        layout: ActionLayout,
        thresholds: HeuristicThresholds = DEFAULT_THRESHOLDS,
        rotation: Sequence[str] | None = None,
    ) -> None:
        super().__init__(layout)
        self.thresholds = thresholds
        self.rotation = tuple(default_rotation(layout) if rotation is None else rotation)
        if not self.rotation:
            raise ValueError("rotation must name at least one blueprint")
        rotation_actions = [layout.germinate_action(name) for name in self.rotation]
        branch = [_BRANCH.get(stage, _NO_LIVE_SEED) for stage in SeedStage]
        self._rotation_actions: torch.Tensor
        self._branch: torch.Tensor
        self._offsets: torch.Tensor
        self.register_buffer("_rotation_actions", torch.tensor(rotation_actions))
        self.register_buffer("_branch", torch.tensor(branch))
        self.register_buffer("_offsets", torch.arange(len(self.rotation)))
        self.last_cull_epoch: torch.Tensor
        self.penalties: torch.Tensor
        self.position: torch.Tensor
        self.seed_blueprint: torch.Tensor
        self.germination_accuracy: torch.Tensor
        for name, tensor in self._fresh_memory(0).items():
            self.register_buffer(name, tensor, persistent=False)

    def _fresh_memory(
        self, rows: int, device: torch.device | None = None
    ) -> dict[str, torch.Tensor]:
        """Memory for `rows` rows never seen: float64 so the rules match Python floats exactly."""
        f64, i64 = torch.float64, torch.long
        never_culled = self.thresholds.initial_last_cull_epoch
        return {
            "last_cull_epoch": torch.full((rows,), never_culled, dtype=f64, device=device),
            "penalties": torch.zeros((rows, len(self.rotation)), dtype=f64, device=device),
            "position": torch.zeros((rows,), dtype=i64, device=device),
            # Rotation index of the row's live seed's blueprint; -1 when unknown.
            "seed_blueprint": torch.full((rows,), -1, dtype=i64, device=device),
            "germination_accuracy": torch.full((rows,), float("nan"), dtype=f64, device=device),
        }

    @property
    def capacity(self) -> int:
        return int(self.position.shape[0])

    def reserve(self, rows: int) -> None:
        """Grow the memory (doubling) so rows 0..rows-1 exist; new rows start fresh."""
        have = self.capacity
        if rows <= have:
            return
        grown = self._fresh_memory(max(rows, 2 * have), self.position.device)
        for name, tensor in grown.items():
            tensor[:have] = getattr(self, name)
            setattr(self, name, tensor)

    def forget(self, rows: torch.Tensor) -> None:
        """Reset `rows` to a fresh memory, as for a worker seen for the first time."""
        fresh = self._fresh_memory(1, self.position.device)
        for name, tensor in fresh.items():
            getattr(self, name)[rows] = tensor[0]

    def forward(self, batch: ObservationBatch, masks: torch.Tensor) -> PolicyOutput:
        t = self.thresholds
        columns = batch.columns
        rows = batch.rows
        epoch = columns[:, Column.EPOCH]
        plateau = columns[:, Column.PLATEAU_EPOCHS]
        accuracy = columns[:, Column.VAL_ACCURACY]
        in_stage = columns[:, Column.SEED_EPOCHS_IN_STAGE]
        improvement = columns[:, Column.SEED_IMPROVEMENT]
        branch = self._branch[columns[:, Column.SEED_STAGE].long()]
        wait = self.layout.wait

        # No live seed: cooldown, then warm-up, then plateau; rules tried in that order.
        cooling = (epoch - self.last_cull_epoch[rows]) < t.cull_cooldown_epochs
        warming = epoch < t.warmup_epochs
        plateaued = plateau >= t.plateau_epochs_to_germinate
        empty_reason = torch.where(
            cooling,
            DecisionReason.CULL_COOLDOWN,
            torch.where(
                warming,
                DecisionReason.WARMING_UP,
                torch.where(plateaued, DecisionReason.PLATEAU, DecisionReason.NO_PLATEAU),
            ),
        )
        blueprint, decayed = self._next_blueprint(rows)
        germinate = (branch == _NO_LIVE_SEED) & ~cooling & ~warming & plateaued

        # Live seed: wait while germinated, cull regressions, decide probation.
        regressing = (in_stage >= t.cull_min_epochs_in_stage) & (
            improvement < t.cull_improvement_below
        )
        known_start = self.germination_accuracy[rows]
        total = torch.where(torch.isnan(known_start), improvement, accuracy - known_start)
        improved = total > t.fossilize_improvement_above

        proposal = torch.full_like(rows, wait)
        proposal = torch.where(germinate, self._rotation_actions[blueprint], proposal)
        proposal = torch.where((branch == _DEVELOPING) & regressing, self.layout.cull, proposal)
        on_probation = branch == _PROBATION
        proposal = torch.where(
            on_probation,
            torch.where(improved, self.layout.fossilize, self.layout.cull),
            proposal,
        )
        reasons = (
            torch.stack(
                (
                    empty_reason,
                    torch.full_like(rows, DecisionReason.SEED_GERMINATED),
                    torch.where(
                        regressing, DecisionReason.SEED_REGRESSING, DecisionReason.SEED_DEVELOPING
                    ),
                    torch.where(
                        improved, DecisionReason.SEED_IMPROVED, DecisionReason.SEED_NOT_IMPROVED
                    ),
                ),
                dim=1,
            )
            .gather(1, branch.unsqueeze(1))
            .squeeze(1)
        )
        ones = torch.ones_like(epoch)
        confidence = torch.where(
            germinate, torch.clamp(plateau / t.germinate_confidence_epochs, max=1.0), ones
        )
        confidence = torch.where(
            on_probation & improved,
            torch.clamp(total / t.fossilize_confidence_pp, max=1.0),
            confidence,
        )

        legal = masks.gather(1, proposal.unsqueeze(1)).squeeze(1)
        actions = torch.where(legal, proposal, wait)
        reasons = torch.where(legal, reasons, DecisionReason.ILLEGAL_PROPOSAL)
        confidence = torch.where(legal, confidence, ones)
        self._remember(rows, actions, epoch, accuracy, blueprint, decayed, germinate & legal)
        return PolicyOutput(actions, confidence, reasons)

    def _next_blueprint(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per row: the rotation index a germination would take, and the decayed penalties.

        Penalties decay first (x decay, dropped below the floor); then the first blueprint
        from the rotation position with a penalty under the skip level wins, else the
        lowest-penalty one (the first such from the position on a tie).
        """
        t = self.thresholds
        decayed = self.penalties[rows] * t.penalty_decay
        decayed = torch.where(decayed < t.penalty_floor, 0.0, decayed)
        order = (self.position[rows].unsqueeze(1) + self._offsets) % len(self.rotation)
        ordered = decayed.gather(1, order)
        usable = ordered < t.penalty_skip_at
        # argmax/argmin return the first extreme index, which is the scan order.
        step = torch.where(
            usable.any(dim=1), usable.to(torch.uint8).argmax(dim=1), ordered.argmin(dim=1)
        )
        return order.gather(1, step.unsqueeze(1)).squeeze(1), decayed

    def _remember(
        self,
        rows: torch.Tensor,
        actions: torch.Tensor,
        epoch: torch.Tensor,
        accuracy: torch.Tensor,
        blueprint: torch.Tensor,
        decayed: torch.Tensor,
        germinated: torch.Tensor,
    ) -> None:
        """Update the rows' memory for the actions taken: whole-row writes, no host sync."""
        t = self.thresholds
        culled = actions == self.layout.cull
        seed_blueprint = self.seed_blueprint[rows]
        penalised = culled & (seed_blueprint >= 0)
        penalty = torch.nn.functional.one_hot(
            seed_blueprint.clamp(min=0), len(self.rotation)
        ) * torch.where(penalised, t.cull_penalty, 0.0).unsqueeze(1)
        penalties = torch.where(germinated.unsqueeze(1), decayed, self.penalties[rows])
        self.penalties[rows] = torch.where(penalised.unsqueeze(1), penalties + penalty, penalties)
        self.position[rows] = torch.where(
            germinated, (blueprint + 1) % len(self.rotation), self.position[rows]
        )
        self.seed_blueprint[rows] = torch.where(
            germinated, blueprint, torch.where(culled, -1, seed_blueprint)
        )
        self.germination_accuracy[rows] = torch.where(
            germinated,
            accuracy,
            torch.where(culled, float("nan"), self.germination_accuracy[rows]),
        )
        self.last_cull_epoch[rows] = torch.where(culled, epoch, self.last_cull_epoch[rows])
