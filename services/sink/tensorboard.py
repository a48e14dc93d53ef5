"""A run as TensorBoard event files, one run folder per worker, to open beside the user's own.

Needs the `tensorboard` extra (torch's SummaryWriter writes through it); nothing else in the
sink imports this module. Steps are the worker's epochs and wall times the bus's send times,
so the curves line up with the user's training logs in both of TensorBoard's time axes.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from torch.utils.tensorboard import SummaryWriter

from leyline import LeylineError
from services.sink.timeline import RunTimeline, WorkerTimeline


class ExportError(LeylineError):
    """The export would mix with event files already there."""


def export_tensorboard(timeline: RunTimeline, directory: Path) -> list[Path]:
    """Write `directory/<worker>/` for every worker; the run folders written, in order."""
    folders = [directory / worker.worker for worker in timeline.workers]
    for folder in folders:
        if any(folder.glob("events.out.tfevents.*")):
            raise ExportError(f"{folder} already holds TensorBoard events: export to a new folder")
    for worker, folder in zip(timeline.workers, folders, strict=True):
        writer = SummaryWriter(log_dir=str(folder))
        try:
            _write_worker(writer, worker)
        finally:
            writer.close()
    return folders


def _write_worker(writer: SummaryWriter, worker: WorkerTimeline) -> None:
    add_scalar, add_text = writer.add_scalar, writer.add_text
    for point in worker.epochs:
        wall = point.sent_ns / 1e9
        add_scalar("accuracy/val", point.val_accuracy, point.epoch, walltime=wall)
        add_scalar("accuracy/train", point.train_accuracy, point.epoch, walltime=wall)
        add_scalar("loss/val", point.val_loss, point.epoch, walltime=wall)
        add_scalar("loss/train", point.train_loss, point.epoch, walltime=wall)
    # A seed reports several stages within one epoch; its value at the end of that epoch stands.
    latest = {(sample.seed_id, sample.epoch): sample for sample in worker.seeds}
    alpha = {key: (sample.alpha, sample.sent_ns) for key, sample in latest.items()}
    for (seed, epoch), sample in latest.items():
        wall = sample.sent_ns / 1e9
        add_scalar(f"seed/{seed}/improvement", sample.improvement, epoch, walltime=wall)
    # Every epoch of a live seed, from its SeedTelemetry; its alpha stands for that epoch's.
    for seed_epoch in worker.seed_epochs:
        wall, step = seed_epoch.sent_ns / 1e9, seed_epoch.epoch
        prefix = f"seed/{seed_epoch.seed_id}"
        alpha[seed_epoch.seed_id, step] = (seed_epoch.alpha, seed_epoch.sent_ns)
        add_scalar(f"{prefix}/accuracy", seed_epoch.accuracy, step, walltime=wall)
        add_scalar(f"{prefix}/accuracy_delta", seed_epoch.accuracy_delta, step, walltime=wall)
        add_scalar(f"{prefix}/gradient_norm", seed_epoch.gradient_norm, step, walltime=wall)
        add_scalar(f"{prefix}/gradient_health", seed_epoch.gradient_health, step, walltime=wall)
    for (seed, epoch), (value, sent_ns) in sorted(alpha.items()):
        add_scalar(f"seed/{seed}/alpha", value, epoch, walltime=sent_ns / 1e9)
    # One text per epoch and tag: TensorBoard shows one entry per step.
    commands: dict[int, list[str]] = defaultdict(list)
    walls: dict[tuple[str, int], float] = {}
    for command in worker.commands:
        answer = command.outcome or "no answer"
        reason = f" ({command.reason})" if command.reason else ""
        commands[command.epoch].append(
            f"- `{command.command_type}` {command.target}{reason}: **{answer}**"
        )
        walls.setdefault(("commands", command.epoch), command.sent_ns / 1e9)
    stages: dict[int, list[str]] = defaultdict(list)
    for change in worker.stages:
        refused = f" (illegal: {change.illegal})" if change.illegal else ""
        seed = f" ({change.seed_id})" if change.seed_id else ""
        stages[change.epoch].append(
            f"- {change.slot}{seed}: {change.from_stage.name} -> {change.to_stage.name}{refused}"
        )
        walls.setdefault(("stages", change.epoch), change.sent_ns / 1e9)
    for tag, texts in (("commands", commands), ("stages", stages)):
        for epoch, lines in sorted(texts.items()):
            add_text(tag, "\n".join(lines), epoch, walltime=walls[tag, epoch])
