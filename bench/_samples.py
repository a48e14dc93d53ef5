"""Realistic instances of the wire messages, as a CIFAR-10 run in mid-training would send them."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import msgspec

from leyline import (
    AckOutcome,
    AdaptationCommand,
    CommandAck,
    CommandType,
    FastTrainingSignals,
    FieldReport,
    Heartbeat,
    Ready,
    RiskLevel,
    SeedMetrics,
    SeedStage,
    SeedStateReport,
    SeedTelemetry,
    TelemetryEvent,
    TelemetryEventType,
    TrainingMetrics,
    TrainingSignals,
)
from leyline.telemetry import SeedStageChanged

_NOW = datetime(2025, 12, 2, 12, 0, tzinfo=UTC)
_SEED = "env0_seed_3"
_SLOT = "block2_post"


def fast_signals(epoch: int = 12, slot_index: int = 0) -> FastTrainingSignals:
    """The hot-path signal of one slot at `epoch`, with every field populated."""
    loss = 2.3 - 0.07 * epoch
    accuracy = 30.0 + 2.2 * epoch
    return FastTrainingSignals.of(
        epoch=epoch,
        global_step=98 * epoch,
        train_loss=loss - 0.05,
        val_loss=loss,
        loss_delta=0.07,
        train_accuracy=accuracy + 1.5,
        val_accuracy=accuracy,
        accuracy_delta=2.2,
        plateau_epochs=epoch % 4,
        best_val_accuracy=accuracy,
        best_val_loss=loss,
        loss_history_5=(loss + 0.28, loss + 0.21, loss + 0.14, loss + 0.07, loss),
        accuracy_history_5=(
            accuracy - 8.8,
            accuracy - 6.6,
            accuracy - 4.4,
            accuracy - 2.2,
            accuracy,
        ),
        has_active_seed=1,
        seed_stage=SeedStage.TRAINING,
        seed_epochs_in_stage=epoch % 5,
        seed_alpha=0.0,
        seed_improvement=0.8,
        available_slots=0,
        slot_index=slot_index,
    )


def training_signals() -> TrainingSignals:
    metrics = TrainingMetrics(
        epoch=12,
        global_step=1176,
        train_loss=1.41,
        val_loss=1.46,
        loss_delta=0.07,
        train_accuracy=58.1,
        val_accuracy=56.4,
        accuracy_delta=2.2,
        plateau_epochs=0,
        best_val_accuracy=56.4,
        best_val_loss=1.46,
        grad_norm_host=0.83,
        grad_norm_seed=0.12,
    )
    return TrainingSignals(
        metrics=metrics,
        active_seeds=[_SEED],
        available_slots=0,
        seed_stage=SeedStage.TRAINING,
        seed_epochs_in_stage=2,
        seed_alpha=0.0,
        seed_improvement=0.8,
        gpu_memory_used=3.2,
        gpu_utilization=0.87,
        loss_history=[1.74, 1.67, 1.6, 1.53, 1.46],
        accuracy_history=[47.6, 49.8, 52.0, 54.2, 56.4],
        epoch_duration_ms=17.4,
        timestamp=_NOW,
    )


def seed_metrics() -> SeedMetrics:
    return SeedMetrics(
        epochs_total=6,
        epochs_in_current_stage=2,
        initial_val_accuracy=43.2,
        current_val_accuracy=56.4,
        best_val_accuracy=56.4,
        accuracy_at_stage_start=55.6,
        total_improvement=13.2,
        improvement_since_stage_start=0.8,
        isolation_violations=0,
        gradient_norm_avg=0.12,
        current_alpha=0.0,
        alpha_ramp_step=0,
    )


def messages() -> list[msgspec.Struct]:
    """One realistic instance of each wire message type."""
    command_id = str(uuid.UUID(int=0x5EED))
    return [
        fast_signals(),
        AdaptationCommand(
            command_id=command_id,
            timestamp=_NOW,
            command_type=CommandType.GERMINATE,
            target_seed_id=_SEED,
            target_slot_id=_SLOT,
            blueprint_id="conv_enhance",
            target_stage=SeedStage.GERMINATED,
            reason="plateau for 3 epochs",
            confidence=0.6,
            risk_level=RiskLevel.YELLOW,
        ),
        CommandAck(
            command_id=command_id,
            worker_id="worker-1",
            outcome=AckOutcome.APPLIED,
            command_type=CommandType.GERMINATE,
            sequence=42,
            stage_after=SeedStage.GERMINATED,
            epoch=12,
            duration_ms=0.8,
        ),
        training_signals(),
        SeedStateReport(
            seed_id=_SEED,
            slot_id=_SLOT,
            blueprint_id="conv_enhance",
            stage=SeedStage.TRAINING,
            previous_stage=SeedStage.GERMINATED,
            stage_entered_at=_NOW - timedelta(seconds=40),
            metrics=seed_metrics(),
            annotations={"host": "cnn", "params": 74_000},
            reported_at=_NOW,
        ),
        FieldReport(
            report_id=str(uuid.UUID(int=0xF1E1D)),
            seed_id=_SEED,
            blueprint_id="conv_enhance",
            slot_id=_SLOT,
            final_stage=SeedStage.FOSSILIZED,
            success=True,
            germinated_at=_NOW - timedelta(minutes=4),
            completed_at=_NOW,
            total_epochs=14,
            epochs_per_stage={"GERMINATED": 1, "TRAINING": 3, "BLENDING": 5, "SHADOWING": 2},
            accuracy_at_germination=43.2,
            accuracy_at_completion=68.9,
            total_improvement=25.7,
            best_accuracy_achieved=69.3,
            signals_at_germination=training_signals(),
            commands_received=[str(uuid.UUID(int=n)) for n in range(1, 5)],
        ),
        TelemetryEvent(
            event_type=TelemetryEventType.SEED_STAGE_CHANGED,
            payload=SeedStageChanged(
                seed_id=_SEED, from_stage=SeedStage.GERMINATED, to_stage=SeedStage.TRAINING
            ),
            event_id=str(uuid.UUID(int=0xE7E27)),
            timestamp=_NOW,
            seed_id=_SEED,
            slot_id=_SLOT,
            epoch=12,
            message="GERMINATED -> TRAINING",
        ),
        SeedTelemetry(
            seed_id=_SEED,
            blueprint_id="conv_enhance",
            layer_id=_SLOT,
            gradient_norm=0.12,
            gradient_health=0.97,
            accuracy=56.4,
            accuracy_delta=2.2,
            epochs_in_stage=2,
            stage=SeedStage.TRAINING,
            alpha=0.0,
            epoch=12,
            captured_at=_NOW,
        ),
        Heartbeat(interval_ms=1000, last_sequences={"sig.worker-1.": 1176, "tel.worker-1.": 87}),
        Ready(prefix="cmd.worker-1.", publisher="controller"),
    ]
