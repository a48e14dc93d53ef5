"""The trainer: real learning on digits, the epoch's signals, and exact resume from a checkpoint."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import NamedTuple

import msgspec
import torch
from worker_helpers import command

from leyline import CommandType, Message, SeedStage, TelemetryEventType, TrainingMetrics
from leyline.wire import decode, encode
from services.worker import LifecycleConfig, Trainer, WorkerModel
from services.worker.tracker import SignalTracker

C = CommandType


def test_a_few_epochs_learn_digits_well_above_chance(make_trainer: Callable[[], Trainer]) -> None:
    trainer = make_trainer()
    reports = [trainer.tick() for _ in range(3)]
    accuracies = [r.metrics.val_accuracy for r in reports]
    assert accuracies[-1] > 70.0  # chance is 10%
    assert reports[-1].metrics.train_loss < reports[0].metrics.train_loss
    assert reports[-1].metrics.best_val_accuracy == max(accuracies)


def test_an_epoch_report_carries_valid_signals_per_slot(
    make_trainer: Callable[[], Trainer],
) -> None:
    trainer = make_trainer()
    trainer.model.apply_command(
        command(C.GERMINATE, blueprint_id="attention", target_slot_id="block3_post")
    )
    report = trainer.tick()
    batches = -(-len(trainer.data.train_y) // trainer.model.training.batch_size)
    assert (report.epoch, report.metrics.epoch, report.metrics.global_step) == (1, 1, batches)
    assert [f.slot_index for f in report.fast] == [0, 1]
    empty, seeded = (f.named() for f in report.fast)
    assert (empty.seed_stage, empty.has_active_seed, empty.available_slots) == (
        SeedStage.DORMANT,
        0,
        1,
    )
    assert (seeded.seed_stage, seeded.has_active_seed) == (SeedStage.TRAINING, 1)
    assert report.signals.active_seeds == ["w1-block3_post-1"]
    [telemetry] = report.seed_telemetry
    assert telemetry.layer_id == "block3_post" and telemetry.stage is SeedStage.TRAINING
    assert telemetry.gradient_norm > 0.0 and telemetry.gradient_health == 1.0
    kinds = [e.event_type for e in report.events]
    assert kinds == [TelemetryEventType.SEED_STAGE_CHANGED, TelemetryEventType.EPOCH_COMPLETED]
    assert [r.stage for r in report.reports] == [SeedStage.TRAINING]
    assert report.metrics.grad_norm_seed > 0.0 and report.metrics.grad_norm_host > 0.0
    messages: list[Message] = [*report.fast, report.signals, *report.seed_telemetry, *report.events]
    for message in messages:
        assert decode(encode(message)) == message


def test_tracker_counts_plateaus_and_keeps_the_best_recent_loss() -> None:
    tracker = SignalTracker()
    accuracies = [50.0, 60.0, 60.2, 60.4, 60.3, 70.0]
    metrics = []
    for epoch, accuracy in enumerate(accuracies, start=1):
        metrics.append(
            tracker.update(
                epoch=epoch, global_step=epoch, train_loss=1.0, train_accuracy=accuracy,
                val_loss=2.0 - epoch / 10, val_accuracy=accuracy,
            )
        )  # fmt: skip
    assert [m.plateau_epochs for m in metrics] == [1, 0, 1, 2, 3, 0]
    assert metrics[0].accuracy_delta == 0.0 and metrics[0].loss_delta == 0.0
    assert abs(metrics[1].loss_delta - 0.1) < 1e-9
    for epoch in range(7, 20):  # losses now rise; the best of the last 10 rises with them
        last = tracker.update(
            epoch=epoch, global_step=epoch, train_loss=1.0, train_accuracy=70.0,
            val_loss=1.0 + epoch / 10, val_accuracy=70.0,
        )  # fmt: skip
    assert abs(last.best_val_loss - 2.0) < 1e-9  # the min over epochs 10..19
    assert tracker.loss_history == [1.0 + e / 10 for e in range(15, 20)]


def _round_trip(state: dict) -> dict:  # type: ignore[type-arg]
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    loaded: dict = torch.load(buffer, weights_only=True)  # type: ignore[type-arg]
    return loaded


class _Snapshot(NamedTuple):
    metrics: TrainingMetrics
    weights: dict[str, torch.Tensor]
    slots: list[tuple[SeedStage, object, float]]
    guard: dict[str, dict[str, int]]
    seed_lr: float | None


def _tick_and_snapshot(trainer: Trainer) -> _Snapshot:
    model = trainer.model
    return _Snapshot(
        trainer.tick().metrics,
        {k: v.clone() for k, v in model.host.state_dict().items()},
        [(s.stage, msgspec.to_builtins(s.metrics), s.alpha) for s in model.slots.values()],
        model.guard.snapshot(),
        model.seed_learning_rate("block2_post"),
    )


def test_state_dict_round_trip_resumes_identically(digits) -> None:  # type: ignore[no-untyped-def]
    quick_embargo = LifecycleConfig(embargo_epochs=1)  # so the culled slot is free in 3 epochs
    first = Trainer(WorkerModel("w1", lifecycle=quick_embargo), digits)
    first.tick()
    first.model.apply_command(
        command(C.GERMINATE, blueprint_id="conv_enhance", target_slot_id="block2_post")
    )
    first.model.apply_command(
        command(C.SET_LEARNING_RATE, target_slot_id="block2_post", learning_rate=0.01)
    )
    first.model.apply_command(
        command(C.GERMINATE, blueprint_id="depthwise", target_slot_id="block3_post")
    )
    first.tick()
    first.model.apply_command(command(C.CULL, target_slot_id="block3_post"))
    saved = _round_trip(first.state_dict())

    resumed = Trainer(WorkerModel("w1", lifecycle=quick_embargo), digits)
    resumed.load_state_dict(saved)
    for _ in range(3):
        expected, actual = _tick_and_snapshot(first), _tick_and_snapshot(resumed)
        assert expected.metrics == actual.metrics
        assert expected.weights.keys() == actual.weights.keys()
        assert all(torch.equal(w, actual.weights[k]) for k, w in expected.weights.items())
        assert (expected.slots, expected.guard, expected.seed_lr) == (
            actual.slots,
            actual.guard,
            actual.seed_lr,
        )
    regrown = [
        t.model.apply_command(command(C.GERMINATE, blueprint_id="norm", target_seed_id="x"))
        for t in (first, resumed)
    ]
    assert all(outcome.applied for outcome in regrown)
    assert regrown[0].seed_id == regrown[1].seed_id == "w1-block3_post-3"
    grown = [t.model.slots["block3_post"].seed_parameters() for t in (first, resumed)]
    assert all(torch.equal(a, b) for a, b in zip(*grown, strict=True))
