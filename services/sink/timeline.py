"""A run as series over epochs, per worker: what the plot and the TensorBoard export draw from.

Everything is placed on the worker's epoch axis. Epoch results and stage changes carry their
epoch; a command or a seed report is placed at the last epoch its worker had completed when it
was sent (0 before the first), which is the epoch the controller was looking at.
"""

from __future__ import annotations

import bisect
import sqlite3

import msgspec

from leyline import SeedStage
from services.sink.store import TelemetryStore

_EPOCHS = """
SELECT sender, epoch, sent_ns,
  json_extract(message, '$.payload.train_loss'), json_extract(message, '$.payload.val_loss'),
  json_extract(message, '$.payload.train_accuracy'), json_extract(message, '$.payload.val_accuracy')
FROM events WHERE event_type = 'EPOCH_COMPLETED' ORDER BY sent_ns, sequence
"""
_STAGES = """
SELECT sender, COALESCE(slot_id, seed_id), seed_id, COALESCE(epoch, 0), sent_ns,
  json_extract(message, '$.payload.from_stage'), json_extract(message, '$.payload.to_stage'),
  illegal
FROM events WHERE event_type = 'SEED_STAGE_CHANGED' ORDER BY sent_ns, sequence
"""
# One row per command id (a resent command is one decision), with its first real answer.
_COMMANDS = """
SELECT c.worker, c.command_id, c.command_type, COALESCE(c.slot_id, c.seed_id, ''),
  MIN(c.sent_ns), json_extract(c.message, '$.reason'),
  (SELECT a.outcome FROM acks AS a WHERE a.command_id = c.command_id AND a.outcome != 'DUPLICATE'
   ORDER BY a.sent_ns LIMIT 1)
FROM commands AS c GROUP BY c.worker, c.command_id ORDER BY MIN(c.sent_ns)
"""
_SEEDS = """
SELECT sender, seed_id, slot_id, sent_ns, stage,
  json_extract(message, '$.metrics.current_alpha'),
  json_extract(message, '$.metrics.total_improvement')
FROM seed_reports WHERE seed_id != '' ORDER BY sent_ns, sequence
"""
_SEED_TELEMETRY = """
SELECT sender, seed_id, layer_id, epoch, sent_ns, stage, alpha, accuracy, accuracy_delta,
  gradient_norm, gradient_health
FROM seed_telemetry ORDER BY sent_ns, sequence
"""


class EpochPoint(msgspec.Struct, frozen=True):
    """One completed epoch as the worker reported it (accuracies in percent)."""

    epoch: int
    sent_ns: int
    train_loss: float
    val_loss: float
    train_accuracy: float
    val_accuracy: float


class StageChange(msgspec.Struct, frozen=True):
    """A slot moved from one lifecycle stage to another after `epoch`; `illegal` says why not."""

    slot: str
    seed_id: str | None
    epoch: int
    sent_ns: int
    from_stage: SeedStage
    to_stage: SeedStage
    illegal: str | None


class CommandMark(msgspec.Struct, frozen=True):
    """One decision of the controller for this worker; `outcome` is None while unanswered."""

    command_id: str
    command_type: str
    target: str
    epoch: int
    sent_ns: int
    reason: str
    outcome: str | None


class SeedSample(msgspec.Struct, frozen=True):
    """A seed's blending weight and improvement (points) as of one of its state reports."""

    seed_id: str
    slot: str
    epoch: int
    sent_ns: int
    stage: SeedStage
    alpha: float
    improvement: float


class SeedEpoch(msgspec.Struct, frozen=True):
    """A seed at the end of one epoch, from its SeedTelemetry (accuracy in percent)."""

    seed_id: str
    layer_id: str
    epoch: int
    sent_ns: int
    stage: SeedStage
    alpha: float
    accuracy: float
    accuracy_delta: float
    gradient_norm: float
    gradient_health: float


class WorkerTimeline(msgspec.Struct, kw_only=True):
    worker: str
    epochs: list[EpochPoint] = msgspec.field(default_factory=list)
    stages: list[StageChange] = msgspec.field(default_factory=list)
    commands: list[CommandMark] = msgspec.field(default_factory=list)
    seeds: list[SeedSample] = msgspec.field(default_factory=list)
    seed_epochs: list[SeedEpoch] = msgspec.field(default_factory=list)

    @property
    def slots(self) -> list[str]:
        """Every slot whose stage changed, in order of first change."""
        return list(dict.fromkeys(change.slot for change in self.stages))

    def epoch_at(self, sent_ns: int) -> int:
        """The last epoch this worker had reported by `sent_ns` (0 before the first)."""
        index = bisect.bisect_right([point.sent_ns for point in self.epochs], sent_ns)
        return self.epochs[index - 1].epoch if index else 0


class RunTimeline(msgspec.Struct, kw_only=True):
    """Every worker that trained or was commanded, by name; `started_ns` is the first send."""

    started_ns: int
    workers: list[WorkerTimeline]


def build_timeline(store: TelemetryStore) -> RunTimeline:
    """The run's series from one consistent snapshot of `store`."""
    with store.snapshot() as db:
        return _collect(db)


def _collect(db: sqlite3.Connection) -> RunTimeline:
    workers: dict[str, WorkerTimeline] = {}

    def worker(name: str) -> WorkerTimeline:
        found = workers.get(name)
        if found is None:
            found = workers[name] = WorkerTimeline(worker=name)
        return found

    latest: dict[tuple[str, int], EpochPoint] = {}
    for sender, epoch, sent_ns, *figures in db.execute(_EPOCHS):
        # A worker restarted mid-epoch reports that epoch again: the later report stands.
        latest[sender, epoch] = EpochPoint(epoch, sent_ns, *figures)
    for (sender, _), point in latest.items():
        worker(sender).epochs.append(point)
    for timeline in workers.values():
        timeline.epochs.sort(key=lambda point: point.sent_ns)
    for sender, slot, seed, epoch, sent_ns, before, after, illegal in db.execute(_STAGES):
        change = StageChange(
            slot, seed, epoch, sent_ns, SeedStage(before), SeedStage(after), illegal
        )
        worker(sender).stages.append(change)
    for name, command_id, kind, target, sent_ns, reason, outcome in db.execute(_COMMANDS):
        timeline = worker(name)
        epoch = timeline.epoch_at(sent_ns)
        mark = CommandMark(command_id, kind, target, epoch, sent_ns, reason or "", outcome)
        timeline.commands.append(mark)
    for sender, seed, slot, sent_ns, stage, alpha, improvement in db.execute(_SEEDS):
        timeline = worker(sender)
        sample = SeedSample(
            seed, slot, timeline.epoch_at(sent_ns), sent_ns, SeedStage[stage], alpha, improvement
        )
        timeline.seeds.append(sample)
    for sender, seed, layer, epoch, sent_ns, stage, *figures in db.execute(_SEED_TELEMETRY):
        seed_epoch = SeedEpoch(seed, layer, epoch, sent_ns, SeedStage[stage], *figures)
        worker(sender).seed_epochs.append(seed_epoch)
    started = db.execute(
        "SELECT MIN(m) FROM (SELECT MIN(sent_ns) AS m FROM events"
        " UNION ALL SELECT MIN(sent_ns) FROM commands)"
    ).fetchone()[0]
    return RunTimeline(started_ns=started or 0, workers=[workers[name] for name in sorted(workers)])
