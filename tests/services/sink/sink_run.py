"""One small stored run for the pictures and exports: every kind of mark they draw."""

from __future__ import annotations

from sink_history import History

from leyline import (
    AckOutcome,
    SeedStage,
    SeedStateReport,
    SeedTelemetry,
    TelemetryEvent,
    TelemetryEventType,
)
from leyline.reports import SeedMetrics
from leyline.telemetry import SeedStageChanged
from services.sink import StoredMessage, TelemetryStore

S = SeedStage


def _stage(
    history: History, worker: str, epoch: int, before: SeedStage, after: SeedStage, slot: str
) -> StoredMessage:
    seed = f"{worker}-{slot}"
    payload = SeedStageChanged(seed_id=seed, from_stage=before, to_stage=after)
    event = TelemetryEvent(
        event_type=TelemetryEventType.SEED_STAGE_CHANGED,
        payload=payload,
        seed_id=seed,
        slot_id=slot,
        epoch=epoch,
    )
    return history.event(worker, event)


def _seed_report(history: History, worker: str, stage: SeedStage, alpha: float) -> StoredMessage:
    metrics = SeedMetrics(current_alpha=alpha, total_improvement=alpha * 4)
    report = SeedStateReport(
        seed_id=f"{worker}-block2_post", slot_id="block2_post", stage=stage, metrics=metrics
    )
    return history.stored("rep", worker, worker, report)


def _seed_telemetry(
    history: History, worker: str, epoch: int, stage: SeedStage, alpha: float
) -> StoredMessage:
    telemetry = SeedTelemetry(
        seed_id=f"{worker}-block2_post",
        layer_id="block2_post",
        epoch=epoch,
        stage=stage,
        alpha=alpha,
        accuracy=50.0 + epoch,
        accuracy_delta=float(epoch),
        gradient_norm=0.5 * epoch,
        gradient_health=0.9,
    )
    return history.stored("rep", worker, worker, telemetry)


def write_run(store: TelemetryStore, history: History) -> None:
    """w1: four epochs (epoch 2 reported twice), a seed that blends in, a refused cull; w2 idle."""
    germinate = history.germinate_command("w1-block2_post")
    cull = history.cull_command("w1-block3_post")
    store.write_batch(
        [
            history.epoch("w1", 1, 40.0),
            history.command("w1", germinate),
            history.ack("w1", germinate, AckOutcome.APPLIED),
            _stage(history, "w1", 1, S.DORMANT, S.GERMINATED, "block2_post"),
            _seed_report(history, "w1", S.GERMINATED, 0.0),
            history.epoch("w1", 2, 50.0),
            history.epoch("w1", 2, 55.0),  # trained again after a restart: this one stands
            _stage(history, "w1", 2, S.GERMINATED, S.TRAINING, "block2_post"),
            _seed_telemetry(history, "w1", 2, S.TRAINING, 0.0),
            _stage(history, "w1", 2, S.DORMANT, S.FOSSILIZED, "block3_post"),  # illegal
            history.command("w1", cull),
            history.ack("w1", cull, AckOutcome.REJECTED, reason="ILLEGAL_TRANSITION"),
            history.command("w1", cull),  # resent: still one decision
            history.epoch("w1", 3, 60.0),
            _stage(history, "w1", 3, S.TRAINING, S.BLENDING, "block2_post"),
            _seed_report(history, "w1", S.BLENDING, 0.5),
            history.epoch("w1", 4, 62.0),
            _seed_telemetry(history, "w1", 4, S.BLENDING, 0.75),
            history.command("w2", history.germinate_command("w2-block2_post")),  # no answer
            history.epoch("w2", 1, 30.0),
        ]
    )
