"""The epoch clock: from the metrics a training loop hands over to what a worker publishes.

Any loop, the built-in digits trainer or a user's own, calls `begin` before an epoch's first
step (`record_step` calls it if the loop does not), `record_step` after each backward pass,
and `end` with the epoch's losses and accuracies. `end` advances every slot and returns the
`EpochReport`: the controller's observation (`TrainingSignals`, one `FastTrainingSignals` per
slot), each seed's telemetry, the lifecycle events and the reports of slots that moved.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import msgspec
import torch

from leyline import (
    FastTrainingSignals,
    SeedStage,
    SeedStateReport,
    SeedTelemetry,
    TelemetryEvent,
    TelemetryEventType,
    TrainingMetrics,
    TrainingSignals,
)
from leyline.lifecycle import is_active_stage
from leyline.telemetry import EpochCompleted, PlateauDetected
from services.worker.records import seed_telemetry
from services.worker.seeds import Seeds
from services.worker.tracker import SignalTracker

#: A plateau this long is worth an event (the heuristic controller germinates at 3).
PLATEAU_EVENT_EPOCHS = 3
_SEED_IMPROVEMENT_BOUND = 100.0


@dataclass
class EpochReport:
    """Everything one epoch produced, ready to publish.

    `fast` has one entry per slot, in slot order, each with its `slot_index`; `reports` holds
    the slots whose stage changed during the epoch.
    """

    epoch: int
    metrics: TrainingMetrics
    signals: TrainingSignals
    fast: list[FastTrainingSignals]
    seed_telemetry: list[SeedTelemetry]
    events: list[TelemetryEvent]
    reports: list[SeedStateReport]
    duration_ms: float


@dataclass
class _Open:
    """The epoch under way: what its start produced and the gradient norms so far."""

    epoch: int
    started: float
    events: list[TelemetryEvent] = field(default_factory=list)
    reports: list[SeedStateReport] = field(default_factory=list)
    host_norm: float = 0.0
    seed_norm: float = 0.0
    steps: int = 0


def _total_norm(params: list[torch.nn.Parameter]) -> float:
    grads = [p.grad for p in params if p.grad is not None]
    return float(torch.nn.utils.get_total_norm(grads)) if grads else 0.0


class EpochClock:
    """Counts steps and epochs for one `Seeds` and turns each epoch into its report."""

    def __init__(self, seeds: Seeds) -> None:
        self.seeds = seeds
        self.tracker = SignalTracker()
        self.global_step = 0
        self._open: _Open | None = None

    @property
    def epoch(self) -> int:
        """The last finished epoch (0 before the first)."""
        return self.seeds.epoch

    def begin(self) -> None:
        """Start the next epoch: germinated seeds start TRAINING, blending steps on."""
        if self._open is not None:
            return
        epoch = self.seeds.epoch + 1
        events, reports = self.seeds.begin_epoch(epoch)
        self._open = _Open(epoch, time.perf_counter(), events, reports)

    def record_step(self) -> None:
        """One optimiser step done (call after backward): gradient norms and seed health."""
        self.begin()
        current = self._open
        assert current is not None
        seeds = self.seeds
        current.host_norm += _total_norm(list(seeds.host_parameters()))
        current.seed_norm += _total_norm(seeds.seed_parameters())
        seeds.record_gradients()
        current.steps += 1
        self.global_step += 1

    def end(
        self,
        *,
        train_loss: float,
        val_loss: float,
        val_accuracy: float,
        train_accuracy: float = 0.0,
    ) -> EpochReport:
        """Close the epoch with its metrics (accuracies in percent); advance every slot."""
        self.begin()
        current = self._open
        assert current is not None
        self._open = None
        seeds, epoch = self.seeds, current.epoch
        slot_events, slot_reports = seeds.end_epoch(epoch, val_accuracy)
        events = [*current.events, *slot_events]
        reports = [*current.reports, *slot_reports]
        steps = max(current.steps, 1)
        metrics = self.tracker.update(
            epoch=epoch,
            global_step=self.global_step,
            train_loss=train_loss,
            train_accuracy=train_accuracy,
            val_loss=val_loss,
            val_accuracy=val_accuracy,
            grad_norm_host=current.host_norm / steps,
            grad_norm_seed=current.seed_norm / steps,
        )
        duration_ms = (time.perf_counter() - current.started) * 1000.0
        signals = self._signals(metrics, duration_ms)
        seeds.signals = signals
        events.extend(_training_events(metrics, duration_ms))
        return EpochReport(
            epoch=epoch,
            metrics=metrics,
            signals=signals,
            fast=self._fast_signals(signals),
            seed_telemetry=[
                t
                for slot in seeds.slots.values()
                if (t := seed_telemetry(slot, epoch, metrics.accuracy_delta)) is not None
            ],
            events=events,
            reports=reports,
            duration_ms=duration_ms,
        )

    def _signals(self, metrics: TrainingMetrics, duration_ms: float) -> TrainingSignals:
        """The worker-wide observation; its seed fields come from the first occupied slot."""
        slots = list(self.seeds.slots.values())
        first = next((s for s in slots if s.is_occupied), None)
        signals = TrainingSignals(
            metrics=metrics,
            active_seeds=[s.seed_id for s in slots if is_active_stage(s.stage)],
            available_slots=sum(s.stage is SeedStage.DORMANT for s in slots),
            loss_history=self.tracker.loss_history,
            accuracy_history=self.tracker.accuracy_history,
            epoch_duration_ms=duration_ms,
        )
        if first is not None:
            m = first.metrics
            signals.seed_stage = first.stage
            signals.seed_epochs_in_stage = m.epochs_in_current_stage
            signals.seed_alpha = m.current_alpha
            signals.seed_improvement = _bounded(m.improvement_since_stage_start)
        return signals

    def _fast_signals(self, signals: TrainingSignals) -> list[FastTrainingSignals]:
        """One hot-path signal per slot, each carrying that slot's seed fields."""
        out = []
        for index, slot in enumerate(self.seeds.slots.values()):
            m = slot.metrics
            active = [slot.seed_id] if is_active_stage(slot.stage) else []
            own = msgspec.structs.replace(signals, active_seeds=active)
            out.append(
                own.to_fast(
                    seed_stage=slot.stage,
                    seed_epochs_in_stage=m.epochs_in_current_stage,
                    seed_alpha=m.current_alpha,
                    seed_improvement=_bounded(m.improvement_since_stage_start),
                    slot_index=index,
                )
            )
        return out

    # -- checkpoint ------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """The tracker and the step count (an epoch is checkpointed closed, never open)."""
        return {"tracker": self.tracker.state(), "global_step": self.global_step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.tracker.load(state["tracker"])
        self.global_step = state["global_step"]
        self._open = None


def _training_events(metrics: TrainingMetrics, duration_ms: float) -> list[TelemetryEvent]:
    epoch = metrics.epoch
    out = [
        TelemetryEvent(
            event_type=TelemetryEventType.EPOCH_COMPLETED,
            payload=EpochCompleted(
                train_loss=metrics.train_loss,
                val_loss=metrics.val_loss,
                train_accuracy=metrics.train_accuracy,
                val_accuracy=metrics.val_accuracy,
                duration_ms=duration_ms,
            ),
            epoch=epoch,
        )
    ]
    if metrics.plateau_epochs == PLATEAU_EVENT_EPOCHS:
        out.append(
            TelemetryEvent(
                event_type=TelemetryEventType.PLATEAU_DETECTED,
                payload=PlateauDetected(plateau_epochs=metrics.plateau_epochs),
                epoch=epoch,
            )
        )
    return out


def _bounded(improvement: float) -> float:
    return max(-_SEED_IMPROVEMENT_BOUND, min(_SEED_IMPROVEMENT_BOUND, improvement))
