"""One epoch = one tick: train, validate, advance the slots, and build what the worker publishes."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import msgspec
import torch
import torch.nn.functional as F

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
from services.worker.data import DigitsSplit, load_digits_split, shuffled_batches
from services.worker.model import WorkerModel
from services.worker.records import seed_telemetry
from services.worker.tracker import SignalTracker

#: A plateau this long is worth an event (the heuristic controller germinates at 3).
PLATEAU_EVENT_EPOCHS = 3
_SEED_IMPROVEMENT_BOUND = 100.0


@dataclass
class EpochReport:
    """Everything one tick produced, ready for the process to publish.

    `fast` has one entry per slot, in slot order, each with its `slot_index`; `reports` holds
    the slots whose stage changed during the tick.
    """

    epoch: int
    metrics: TrainingMetrics
    signals: TrainingSignals
    fast: list[FastTrainingSignals]
    seed_telemetry: list[SeedTelemetry]
    events: list[TelemetryEvent]
    reports: list[SeedStateReport]
    duration_ms: float


def _total_norm(params: list[torch.nn.Parameter]) -> float:
    grads = [p.grad for p in params if p.grad is not None]
    return float(torch.nn.utils.get_total_norm(grads)) if grads else 0.0


class Trainer:
    """Trains a `WorkerModel` on the digits set, one `tick()` per epoch, reproducibly.

    Batch order comes from the trainer's own generator, so two trainers built from the same
    config, or one restored from the other's `state_dict()`, run identical epochs.
    """

    def __init__(self, model: WorkerModel, data: DigitsSplit | None = None) -> None:
        torch.set_num_threads(1)  # small convs: threads cost more than they give, and vary sums
        self.model = model
        config = model.training
        self.data = data or load_digits_split(config.seed, config.val_fraction)
        self.generator = torch.Generator().manual_seed(config.seed)
        self.tracker = SignalTracker()
        self.global_step = 0

    @property
    def epoch(self) -> int:
        return self.model.epoch

    def train_epoch(self) -> tuple[float, float, float, float]:
        """One pass over the training set: (loss, accuracy %, host grad norm, seed grad norm)."""
        model, data = self.model, self.data
        host, optimizer = model.host, model.optimizer
        host.train()
        host_params = list(host.host_parameters())
        seed_params = [p for slot in model.slots.values() for p in slot.seed_parameters()]
        slots = list(model.slots.values())
        loss_sum = torch.zeros(())
        correct = torch.zeros((), dtype=torch.long)
        host_norm = seed_norm = 0.0
        steps = 0
        batches = shuffled_batches(
            data.train_x, data.train_y, model.training.batch_size, self.generator
        )
        for images, labels in batches:
            optimizer.zero_grad(set_to_none=True)
            logits = host(images)
            loss = F.cross_entropy(logits, labels)
            loss.backward()  # type: ignore[no-untyped-call]
            host_norm += _total_norm(host_params)
            seed_norm += _total_norm(seed_params)
            for slot in slots:
                slot.record_gradients()
            optimizer.step()
            loss_sum += loss.detach() * len(labels)
            correct += (logits.argmax(dim=1) == labels).sum()
            steps += 1
        self.global_step += steps
        seen = len(data.train_y)
        return (
            float(loss_sum) / seen,
            100.0 * int(correct) / seen,
            host_norm / max(steps, 1),
            seed_norm / max(steps, 1),
        )

    def evaluate(self) -> tuple[float, float]:
        """Validation (loss, accuracy %) in one batch, without gradients."""
        host = self.model.host
        host.eval()
        with torch.inference_mode():
            logits = host(self.data.val_x)
            loss = F.cross_entropy(logits, self.data.val_y)
            correct = int((logits.argmax(dim=1) == self.data.val_y).sum())
        return float(loss), 100.0 * correct / len(self.data.val_y)

    def tick(self) -> EpochReport:
        """Train and validate one epoch, then update every slot and build the epoch's signals."""
        started = time.perf_counter()
        model = self.model
        epoch = model.epoch + 1
        events, reports = model.begin_epoch(epoch)
        train_loss, train_accuracy, host_norm, seed_norm = self.train_epoch()
        val_loss, val_accuracy = self.evaluate()
        slot_events, slot_reports = model.end_epoch(epoch, val_accuracy)
        events.extend(slot_events)
        reports.extend(slot_reports)
        metrics = self.tracker.update(
            epoch=epoch,
            global_step=self.global_step,
            train_loss=train_loss,
            train_accuracy=train_accuracy,
            val_loss=val_loss,
            val_accuracy=val_accuracy,
            grad_norm_host=host_norm,
            grad_norm_seed=seed_norm,
        )
        duration_ms = (time.perf_counter() - started) * 1000.0
        signals = self._signals(metrics, duration_ms)
        model.signals = signals
        events.extend(self._training_events(metrics, duration_ms))
        return EpochReport(
            epoch=epoch,
            metrics=metrics,
            signals=signals,
            fast=self._fast_signals(signals),
            seed_telemetry=[
                t
                for slot in model.slots.values()
                if (t := seed_telemetry(slot, epoch, metrics.accuracy_delta)) is not None
            ],
            events=events,
            reports=reports,
            duration_ms=duration_ms,
        )

    def _signals(self, metrics: TrainingMetrics, duration_ms: float) -> TrainingSignals:
        """The worker-wide observation; its seed fields come from the first occupied slot."""
        slots = list(self.model.slots.values())
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
        for index, slot in enumerate(self.model.slots.values()):
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

    def _training_events(
        self, metrics: TrainingMetrics, duration_ms: float
    ) -> list[TelemetryEvent]:
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

    # -- checkpoint ------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """The model's state plus the batch-order generator, the tracker and the step count."""
        return {
            "model": self.model.state_dict(),
            "generator": self.generator.get_state(),
            "tracker": self.tracker.state(),
            "global_step": self.global_step,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.generator.set_state(state["generator"])
        self.tracker.load(state["tracker"])
        self.global_step = state["global_step"]


def _bounded(improvement: float) -> float:
    return max(-_SEED_IMPROVEMENT_BOUND, min(_SEED_IMPROVEMENT_BOUND, improvement))
