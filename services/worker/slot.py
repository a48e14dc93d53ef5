"""One seed slot: at most one seed, its lifecycle, its metrics and how it joins the forward pass."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import msgspec
import torch
from torch import nn

from leyline import (
    FieldReport,
    LifecycleError,
    LifecycleGuard,
    SeedMetrics,
    SeedStage,
    TelemetryEvent,
    TrainingSignals,
)
from leyline._types import utc_now
from leyline.gates import GateInputs, GateResult, evaluate_gate
from leyline.telemetry import GradientAnomaly
from services.worker import events, records
from services.worker.blending import blend, blend_alpha, isolated
from services.worker.blueprints import TOPOLOGY, build_seed, parameter_count
from services.worker.config import LifecycleConfig
from services.worker.gradients import SeedHealth, reaches_parameter

_S = SeedStage
#: Stages a gate guards; failure stages and DORMANT are entered without one.
_GATED = frozenset({_S.GERMINATED, _S.TRAINING, _S.BLENDING, _S.SHADOWING, _S.PROBATIONARY,
                    _S.FOSSILIZED})  # fmt: skip
#: Stages that blend the seed in while its input stays cut from the host graph.
_ON_TRIAL = frozenset({_S.BLENDING, _S.SHADOWING, _S.PROBATIONARY})


@dataclass
class SlotChange:
    """What one slot operation did: the gate it ran, events, a finished life, freed parameters."""

    moved: bool = False
    gate: GateResult | None = None
    events: list[TelemetryEvent] = field(default_factory=list)
    field_report: FieldReport | None = None
    released: list[nn.Parameter] = field(default_factory=list)

    def merge(self, other: SlotChange) -> SlotChange:
        self.moved = self.moved or other.moved
        self.gate = other.gate or self.gate
        self.events.extend(other.events)
        self.field_report = other.field_report or self.field_report
        self.released.extend(other.released)
        return self


class SeedSlot(nn.Module):
    """A host injection point holding at most one seed and driving it through its lifecycle.

    Every stage change goes through the worker's `LifecycleGuard`. The forward pass depends on
    the stage: no seed or not active is the identity; TRAINING is `isolated` (host values, seed
    gradients); BLENDING to PROBATIONARY is `blend` with the seed's input detached, so the host
    never learns through a seed that may still be culled; FOSSILIZED blends with gradients
    flowing through the seed, which is now part of the host.
    """

    def __init__(
        self,
        slot_id: str,
        channels: int,
        *,
        worker_id: str = "",
        guard: LifecycleGuard | None = None,
        config: LifecycleConfig | None = None,
        host_parameter_ids: frozenset[int] = frozenset(),
        topology: str = TOPOLOGY,
    ) -> None:
        """A slot on `channels`-wide features (a conv map's channels, a sequence's model width,
        a flat vector's size): the seed it grows must map the tensor it sees to its own shape.

        A user places unbound slots in their module; the agent that drives them binds each to
        its worker, lifecycle guard and config (`bind`) before the first command.
        """
        super().__init__()
        self.slot_id = slot_id
        self.channels = channels
        self.seed: nn.Module | None = None
        self.bind(
            worker_id,
            guard or LifecycleGuard(),
            config or LifecycleConfig(),
            host_parameter_ids,
            topology,
        )

    def bind(
        self,
        worker_id: str,
        guard: LifecycleGuard,
        config: LifecycleConfig,
        host_parameter_ids: frozenset[int],
        topology: str,
    ) -> None:
        """Put this empty slot under `worker_id`'s guard; it (re)starts DORMANT there."""
        if self.seed is not None:
            raise LifecycleError(f"{worker_id}/{self.slot_id}: only an empty slot can be bound")
        self.worker_id = worker_id
        self.guard = guard
        self.config = config
        self.host_parameter_ids = host_parameter_ids
        self.topology = topology
        self._stage = guard.stage(worker_id, self.slot_id)
        if self._stage is _S.UNKNOWN:
            self._stage = self._guarded(_S.DORMANT)
        elif self._stage is not _S.DORMANT:
            raise LifecycleError(f"{worker_id}/{self.slot_id}: a new slot must start DORMANT")
        self.previous_stage = _S.UNKNOWN
        self.stage_entered_at = utc_now()
        self._clear_seed()

    def _clear_seed(self) -> None:
        self.seed = None
        self.seed_id = ""
        self.blueprint_id = ""
        self.metrics = SeedMetrics()
        self.paused = False
        self.alpha_pinned = False
        self.germinated_at = utc_now()
        self.epochs_per_stage: dict[str, int] = {}
        self.commands_received: list[str] = []
        self.signals_at_germination: TrainingSignals | None = None
        self.last_gate: GateResult | None = None
        self.health = SeedHealth()
        self._violations_reported = 0

    # -- state -----------------------------------------------------------------------------

    @property
    def stage(self) -> SeedStage:
        return self._stage

    @property
    def alpha(self) -> float:
        return self.metrics.current_alpha

    @property
    def is_occupied(self) -> bool:
        return self.seed_id != ""

    def seed_parameters(self) -> list[nn.Parameter]:
        return [] if self.seed is None else list(self.seed.parameters())

    # -- forward ---------------------------------------------------------------------------

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        seed, stage = self.seed, self._stage
        if seed is None:
            return x
        if stage is _S.TRAINING:
            if not torch.is_grad_enabled():
                return x  # the isolated value is the host's: no need to run the seed
            out = seed(x.detach())
            learning = self.training and out.requires_grad
            if learning and reaches_parameter(out, self.host_parameter_ids):
                self.metrics.isolation_violations += 1
            return isolated(x, out)
        if stage in _ON_TRIAL:
            return blend(x, seed(x.detach()), self.metrics.current_alpha)
        if stage is _S.FOSSILIZED:
            return blend(x, seed(x), self.metrics.current_alpha)
        return x

    def record_gradients(self) -> None:
        """Add this step's seed gradients to the epoch's statistics (call after backward)."""
        if self.seed is not None and not self.paused:
            self.health.stats.record(self.seed.parameters())

    # -- transitions -----------------------------------------------------------------------

    def _guarded(self, to_stage: SeedStage) -> SeedStage:
        verdict = self.guard.apply(self.worker_id, self.slot_id, to_stage)
        if not verdict.allowed:
            raise LifecycleError(verdict.detail)
        return to_stage

    def _move(self, to_stage: SeedStage, epoch: int) -> SlotChange:
        """Record a legal stage change, reset the stage clock, apply the stage's entry rules."""
        from_stage = self._stage
        seed_id = self.seed_id
        self._guarded(to_stage)
        m = self.metrics
        if from_stage is not _S.DORMANT:
            self.epochs_per_stage[from_stage.name] = (
                self.epochs_per_stage.get(from_stage.name, 0) + m.epochs_in_current_stage
            )
        self.previous_stage, self._stage = from_stage, to_stage
        self.stage_entered_at = utc_now()
        m.epochs_in_current_stage = 0
        m.accuracy_at_stage_start = m.current_val_accuracy
        m.improvement_since_stage_start = 0.0
        change = SlotChange(
            moved=True,
            events=[events.stage_changed(self.slot_id, seed_id, from_stage, to_stage, epoch)],
        )
        if to_stage is _S.BLENDING:
            m.alpha_ramp_step = 0
            if not self.alpha_pinned:
                m.current_alpha = 0.0
        elif to_stage is _S.FOSSILIZED:
            m.current_alpha, self.alpha_pinned = 1.0, False
        elif to_stage is _S.RESETTING:
            change.released = self.seed_parameters()
            self.seed = None
        elif to_stage is _S.DORMANT:
            self._clear_seed()
        return change

    def gate_inputs(self) -> GateInputs:
        m = self.metrics
        return GateInputs(
            seed_id=self.seed_id,
            blueprint_id=self.blueprint_id,
            stage=self._stage,
            epochs_in_stage=m.epochs_in_current_stage,
            improvement_since_stage_start=m.improvement_since_stage_start,
            total_improvement=m.total_improvement,
            isolation_violations=m.isolation_violations,
            alpha=m.current_alpha,
            is_healthy=self.health.healthy,
        )

    def germinate(
        self,
        seed_id: str,
        blueprint_id: str,
        module: nn.Module,
        *,
        epoch: int,
        baseline_accuracy: float,
        signals: TrainingSignals | None = None,
    ) -> SlotChange:
        """Attach `module` as a new seed through G0: DORMANT -> GERMINATED."""
        inputs = GateInputs(seed_id=seed_id, blueprint_id=blueprint_id, stage=self._stage)
        gate = evaluate_gate(_S.GERMINATED, inputs, self.config.thresholds)
        if not gate.passed:
            return SlotChange(gate=gate)
        verdict = self.guard.check(self.worker_id, self.slot_id, _S.GERMINATED)
        if not verdict.allowed:
            raise LifecycleError(verdict.detail)
        self._clear_seed()
        self.seed, self.seed_id, self.blueprint_id = module, seed_id, blueprint_id
        self.signals_at_germination = signals
        self.last_gate = gate
        m = self.metrics
        m.initial_val_accuracy = m.current_val_accuracy = m.best_val_accuracy = baseline_accuracy
        change = self._move(_S.GERMINATED, epoch)
        change.gate = gate
        params = parameter_count(module)
        change.events.append(
            events.seed_germinated(self.slot_id, seed_id, blueprint_id, params, epoch)
        )
        return change

    def advance(self, target: SeedStage, *, epoch: int, reason: str = "") -> SlotChange:
        """Move to `target` through its gate (none for failure stages); CULLED means `cull`."""
        if target is _S.CULLED:
            return self.cull(reason or "advanced to CULLED", epoch=epoch)
        gate = None
        if target in _GATED:
            gate = evaluate_gate(target, self.gate_inputs(), self.config.thresholds)
            self.last_gate = gate
            if not gate.passed:
                return SlotChange(gate=gate)
        change = self._move(target, epoch)
        change.gate = gate
        if target is _S.FOSSILIZED:
            payload = records.fossilized_payload(self)
            change.events.append(events.seed_fossilized(self.slot_id, payload, epoch))
            change.field_report = records.field_report(self, success=True)
        return change

    def cull(self, reason: str, *, epoch: int) -> SlotChange:
        """End the seed's life: -> CULLED; the slot then cools off and is reset for reuse."""
        failed_in = self._stage
        culled = records.culled_payload(self, reason)
        change = self._move(_S.CULLED, epoch)
        self.paused = False
        change.events.append(events.seed_culled(self.slot_id, culled, epoch))
        change.field_report = records.field_report(
            self, success=False, failure_reason=reason, failure_stage=failed_in
        )
        return change

    # -- commands on a live seed -----------------------------------------------------------

    def set_alpha(self, value: float) -> None:
        """Pin alpha (clamped to [0, 1]); the blending ramp stops driving it until it ends."""
        self.metrics.current_alpha = min(1.0, max(0.0, value))
        self.alpha_pinned = True

    def pause(self) -> None:
        """Freeze the seed's parameters and its stage clock."""
        self.paused = True
        if self.seed is not None:
            self.seed.requires_grad_(False)

    def resume(self) -> None:
        self.paused = False
        if self.seed is not None:
            self.seed.requires_grad_(True)

    # -- the epoch clock -------------------------------------------------------------------

    def begin_epoch(self, epoch: int) -> SlotChange:
        """Before training: GERMINATED -> TRAINING through G1, and the next blending step."""
        if self.paused:
            return SlotChange()
        if self._stage is _S.GERMINATED:
            return self.advance(_S.TRAINING, epoch=epoch)
        m = self.metrics
        if self._stage is _S.BLENDING and m.alpha_ramp_step < self.config.blending_steps:
            m.alpha_ramp_step += 1
            if not self.alpha_pinned:
                m.current_alpha = blend_alpha(m.alpha_ramp_step, self.config.blending_steps)
        return SlotChange()

    def end_epoch(self, epoch: int, val_accuracy: float) -> SlotChange:
        """After validation: update the metrics, then auto-advance (spec 8)."""
        stage, m = self._stage, self.metrics
        if stage is _S.DORMANT:
            return SlotChange()
        if not self.paused:
            m.epochs_in_current_stage += 1
        if stage in (_S.CULLED, _S.EMBARGOED, _S.RESETTING):
            return self._cool_off(epoch)
        m.epochs_total += 1
        m.current_val_accuracy = val_accuracy
        m.best_val_accuracy = max(m.best_val_accuracy, val_accuracy)
        m.total_improvement = val_accuracy - m.initial_val_accuracy
        m.improvement_since_stage_start = val_accuracy - m.accuracy_at_stage_start
        change = SlotChange(events=self._close_gradient_epoch(epoch))
        if self.paused:
            return change
        if stage is _S.TRAINING and m.epochs_in_current_stage >= self.config.training_dwell:
            change.merge(self.advance(_S.BLENDING, epoch=epoch))
        elif stage is _S.BLENDING and m.alpha_ramp_step >= self.config.blending_steps:
            m.current_alpha, self.alpha_pinned = 1.0, False
            change.merge(self.advance(_S.SHADOWING, epoch=epoch))
        elif stage is _S.SHADOWING and m.epochs_in_current_stage >= self.config.shadowing_dwell:
            change.merge(self.advance(_S.PROBATIONARY, epoch=epoch))
        return change

    def _cool_off(self, epoch: int) -> SlotChange:
        """CULLED -> EMBARGOED at once, EMBARGOED -> RESETTING after the embargo, then DORMANT."""
        stage, waited = self._stage, self.metrics.epochs_in_current_stage
        if stage is _S.CULLED:
            return self._move(_S.EMBARGOED, epoch)
        if stage is _S.EMBARGOED and waited >= self.config.embargo_epochs:
            return self._move(_S.RESETTING, epoch)
        if stage is _S.RESETTING and waited >= 1:
            return self._move(_S.DORMANT, epoch)
        return SlotChange()

    def _close_gradient_epoch(self, epoch: int) -> list[TelemetryEvent]:
        """Fold the epoch's gradient statistics into the seed's health; events for anomalies."""
        out: list[TelemetryEvent] = []
        health, m = self.health, self.metrics
        if health.close_epoch():
            m.gradient_norm_avg = health.norm_avg
            if health.anomalous:
                anomaly = GradientAnomaly(
                    seed_id=self.seed_id,
                    gradient_norm=health.norm,
                    has_vanishing=health.has_vanishing,
                    has_exploding=health.has_exploding,
                )
                out.append(events.gradient_anomaly(self.slot_id, anomaly, epoch))
        if m.isolation_violations > self._violations_reported:
            self._violations_reported = m.isolation_violations
            out.append(
                events.isolation_violation(
                    self.slot_id, self.seed_id, m.isolation_violations, epoch
                )
            )
        return out

    # -- checkpoint ------------------------------------------------------------------------

    def lifecycle_state(self) -> dict[str, Any]:
        """Everything but the seed's weights (those travel in the module state dict)."""
        return {
            "stage": int(self._stage),
            "previous_stage": int(self.previous_stage),
            "stage_entered_at": self.stage_entered_at.isoformat(),
            "seed_id": self.seed_id,
            "blueprint_id": self.blueprint_id,
            "has_module": self.seed is not None,
            "metrics": msgspec.to_builtins(self.metrics),
            "paused": self.paused,
            "alpha_pinned": self.alpha_pinned,
            "germinated_at": self.germinated_at.isoformat(),
            "epochs_per_stage": dict(self.epochs_per_stage),
            "commands_received": list(self.commands_received),
            "signals_at_germination": msgspec.to_builtins(self.signals_at_germination),
            "last_gate": msgspec.to_builtins(self.last_gate),
            "health": self.health.state(),
            "violations_reported": self._violations_reported,
        }  # fmt: skip

    def restore_lifecycle(self, state: dict[str, Any]) -> None:
        """Undo `lifecycle_state`; rebuilds an empty seed module of the saved blueprint."""
        self._clear_seed()
        self._stage = SeedStage(state["stage"])
        self.guard.record(self.worker_id, self.slot_id, self._stage)
        self.previous_stage = SeedStage(state["previous_stage"])
        self.stage_entered_at = datetime.fromisoformat(state["stage_entered_at"])
        self.seed_id, self.blueprint_id = state["seed_id"], state["blueprint_id"]
        if state["has_module"]:
            self.seed = build_seed(self.blueprint_id, self.channels, self.topology)
        self.metrics = msgspec.convert(state["metrics"], SeedMetrics)
        self.alpha_pinned = state["alpha_pinned"]
        if state["paused"]:
            self.pause()
        self.germinated_at = datetime.fromisoformat(state["germinated_at"])
        self.epochs_per_stage = dict(state["epochs_per_stage"])
        self.commands_received = list(state["commands_received"])
        signals = state["signals_at_germination"]
        self.signals_at_germination = (
            None if signals is None else msgspec.convert(signals, TrainingSignals)
        )
        gate = state["last_gate"]
        self.last_gate = None if gate is None else msgspec.convert(gate, GateResult)
        self.health.load(state["health"])
        self._violations_reported = state["violations_reported"]
