"""A plain-Python reading of spec section 8 (tamiyo), one row at a time: the oracle.

Written from the spec text, not from the tensor code: dictionaries for penalties, `if`
chains for the rules. The tensor policy must take exactly the same decisions.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from leyline import FastTrainingSignals, SeedStage
from leyline.lifecycle import is_live_stage
from leyline.signals import FastTrainingSignalsV1
from services.controller import ActionLayout, DecisionReason, HeuristicThresholds

Choice = tuple[int, float, DecisionReason]

_DEVELOPING = (SeedStage.TRAINING, SeedStage.BLENDING, SeedStage.SHADOWING)


def reference_legal_actions(layout: ActionLayout, fast: FastTrainingSignals) -> set[int]:
    """The legal actions of one slot, straight from the masking rules."""
    signal = fast.named()
    stage = signal.seed_stage
    legal = {layout.wait}
    empty = stage in (SeedStage.UNKNOWN, SeedStage.DORMANT) and signal.has_active_seed == 0
    if empty and signal.available_slots > 0:
        legal |= set(layout.germinate.values())
    if stage is SeedStage.PROBATIONARY:
        legal.add(layout.fossilize)
    if SeedStage.GERMINATED <= stage <= SeedStage.PROBATIONARY:
        legal.add(layout.cull)
    return legal


@dataclass
class RowMemory:
    """What the controller remembers about one (worker, slot)."""

    last_cull_epoch: int
    penalties: dict[str, float] = field(default_factory=dict)
    position: int = 0
    seed_blueprint: str | None = None
    germination_accuracy: float | None = None


class ReferenceHeuristic:
    """The spec's heuristic for many rows, deciding one signal at a time."""

    def __init__(
        self, layout: ActionLayout, thresholds: HeuristicThresholds, rotation: tuple[str, ...]
    ) -> None:
        self.layout = layout
        self.t = thresholds
        self.rotation = rotation
        self.memory: dict[int, RowMemory] = {}

    def decide(self, row: int, fast: FastTrainingSignals, legal: set[int]) -> Choice:
        signal = fast.named()
        memory = self.memory.setdefault(row, RowMemory(self.t.initial_last_cull_epoch))
        action, confidence, reason = self._propose(memory, signal)
        if action not in legal:
            return self.layout.wait, 1.0, DecisionReason.ILLEGAL_PROPOSAL
        if action in self.layout.germinate.values():
            self._germinate(memory, signal)
        elif action == self.layout.cull:
            self._cull(memory, signal)
        return action, confidence, reason

    def _propose(self, memory: RowMemory, signal: FastTrainingSignalsV1) -> Choice:
        t = self.t
        wait = self.layout.wait
        stage = signal.seed_stage
        if not is_live_stage(stage):
            if signal.epoch - memory.last_cull_epoch < t.cull_cooldown_epochs:
                return wait, 1.0, DecisionReason.CULL_COOLDOWN
            if signal.epoch < t.warmup_epochs:
                return wait, 1.0, DecisionReason.WARMING_UP
            if signal.plateau_epochs >= t.plateau_epochs_to_germinate:
                blueprint = self._pick(self._decayed(memory.penalties), memory.position)
                action = self.layout.germinate[self.rotation[blueprint]]
                confidence = min(1.0, signal.plateau_epochs / t.germinate_confidence_epochs)
                return action, confidence, DecisionReason.PLATEAU
            return wait, 1.0, DecisionReason.NO_PLATEAU
        if stage is SeedStage.GERMINATED:
            return wait, 1.0, DecisionReason.SEED_GERMINATED
        if stage in _DEVELOPING:
            if (
                signal.seed_epochs_in_stage >= t.cull_min_epochs_in_stage
                and signal.seed_improvement < t.cull_improvement_below
            ):
                return self.layout.cull, 1.0, DecisionReason.SEED_REGRESSING
            return wait, 1.0, DecisionReason.SEED_DEVELOPING
        start = memory.germination_accuracy
        total = signal.seed_improvement if start is None else signal.val_accuracy - start
        if total > t.fossilize_improvement_above:
            confidence = min(1.0, total / t.fossilize_confidence_pp)
            return self.layout.fossilize, confidence, DecisionReason.SEED_IMPROVED
        return self.layout.cull, 1.0, DecisionReason.SEED_NOT_IMPROVED

    def _decayed(self, penalties: dict[str, float]) -> dict[str, float]:
        decayed = {name: value * self.t.penalty_decay for name, value in penalties.items()}
        return {name: value for name, value in decayed.items() if value >= self.t.penalty_floor}

    def _pick(self, penalties: dict[str, float], position: int) -> int:
        """Rotation index: first from `position` under the skip level, else the lowest."""
        scan = [(position + step) % len(self.rotation) for step in range(len(self.rotation))]
        for index in scan:
            if penalties.get(self.rotation[index], 0.0) < self.t.penalty_skip_at:
                return index
        return min(scan, key=lambda index: penalties.get(self.rotation[index], 0.0))

    def _germinate(self, memory: RowMemory, signal: FastTrainingSignalsV1) -> None:
        memory.penalties = self._decayed(memory.penalties)
        chosen = self._pick(memory.penalties, memory.position)
        memory.position = (chosen + 1) % len(self.rotation)
        memory.seed_blueprint = self.rotation[chosen]
        memory.germination_accuracy = signal.val_accuracy

    def _cull(self, memory: RowMemory, signal: FastTrainingSignalsV1) -> None:
        memory.last_cull_epoch = signal.epoch
        if memory.seed_blueprint is not None:
            name = memory.seed_blueprint
            memory.penalties[name] = memory.penalties.get(name, 0.0) + self.t.cull_penalty
        memory.seed_blueprint = None
        memory.germination_accuracy = None
