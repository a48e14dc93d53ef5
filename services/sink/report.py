"""The run summary: per worker, how training went and what happened to seeds and commands."""

from __future__ import annotations

import sqlite3
from collections import defaultdict

import msgspec

from services.sink.losses import merged
from services.sink.store import TelemetryStore


class WorkerSummary(msgspec.Struct, kw_only=True):
    """One worker's run (or any other sender's, such as the controller's own telemetry)."""

    worker: str
    epochs: int = 0
    accuracy_start: float | None = None
    accuracy_end: float | None = None
    seeds_germinated: int = 0
    seeds_fossilized: int = 0
    seeds_culled: int = 0
    commands_issued: int = 0
    commands_applied: int = 0
    commands_rejected: int = 0
    rejections_by_reason: dict[str, int] = msgspec.field(default_factory=dict)
    #: Runs of consecutive sequences lost in this sender's streams, and the sequences in them.
    gaps: int = 0
    messages_lost: int = 0
    #: Stage changes this sender reported that broke the lifecycle (not refused commands).
    illegal_stage_changes: int = 0


class RunReport(msgspec.Struct, kw_only=True):
    """Everything the sink stored, summed up: totals, then one summary per worker."""

    events: int
    commands: int
    acks: int
    field_reports: int
    workers: list[WorkerSummary]


_LIFECYCLE_COUNTS = {
    "SEED_GERMINATED": "seeds_germinated",
    "SEED_FOSSILIZED": "seeds_fossilized",
    "SEED_CULLED": "seeds_culled",
}
_ACK_COUNTS = {"APPLIED": "commands_applied", "REJECTED": "commands_rejected"}

# Accuracy is the validation accuracy of the first and last epoch sent (sequences restart
# with a sender's incarnation, send times do not). Epochs count once each: a worker killed
# between publishing an epoch and checkpointing it trains (and reports) that epoch again.
_ACCURACY = """
SELECT sender, COUNT(DISTINCT epoch),
  (SELECT json_extract(first.message, '$.payload.val_accuracy') FROM events AS first
   WHERE first.sender = e.sender AND first.event_type = 'EPOCH_COMPLETED'
   ORDER BY first.sent_ns, first.sequence LIMIT 1),
  (SELECT json_extract(last.message, '$.payload.val_accuracy') FROM events AS last
   WHERE last.sender = e.sender AND last.event_type = 'EPOCH_COMPLETED'
   ORDER BY last.sent_ns DESC, last.sequence DESC LIMIT 1)
FROM events AS e WHERE event_type = 'EPOCH_COMPLETED' GROUP BY sender
"""
_LIFECYCLE = (
    "SELECT sender, event_type, COUNT(*) FROM events"
    " WHERE event_type IN ('SEED_GERMINATED', 'SEED_FOSSILIZED', 'SEED_CULLED')"
    " GROUP BY sender, event_type"
)
# Distinct command ids, so a command resent and answered twice counts once.
_COMMANDS = "SELECT worker, COUNT(DISTINCT command_id) FROM commands GROUP BY worker"
_ACKS = "SELECT worker, outcome, COUNT(DISTINCT command_id) FROM acks GROUP BY worker, outcome"
_ACK_REJECTIONS = (
    "SELECT worker, reason, COUNT(DISTINCT command_id) FROM acks WHERE outcome = 'REJECTED'"
    " GROUP BY worker, reason"
)
_VIOLATIONS = (
    "SELECT sender, json_extract(message, '$.payload.reason'), COUNT(*) FROM events"
    " WHERE event_type = 'CONTRACT_VIOLATION' GROUP BY 1, 2"
)
# Summed in Python: sequences reach 2**63 - 1, so run lengths add up past SQLite's integers.
_LOSSES = (
    "SELECT sender, topic, incarnation, first_missing_sequence, last_missing_sequence FROM losses"
)
_ILLEGAL = "SELECT sender, COUNT(*) FROM stage_history WHERE illegal IS NOT NULL GROUP BY sender"


def build_report(store: TelemetryStore) -> RunReport:
    """Summarise everything committed to `store` so far, from one consistent snapshot."""
    with store.snapshot() as db:
        return _summarise(db)


def _summarise(db: sqlite3.Connection) -> RunReport:
    workers: dict[str, WorkerSummary] = {}

    def summary(worker: str) -> WorkerSummary:
        found = workers.get(worker)
        if found is None:
            found = workers[worker] = WorkerSummary(worker=worker)
        return found

    for sender, epochs, start, end in db.execute(_ACCURACY):
        row = summary(sender)
        row.epochs, row.accuracy_start, row.accuracy_end = epochs, start, end
    for sender, kind, count in db.execute(_LIFECYCLE):
        setattr(summary(sender), _LIFECYCLE_COUNTS[kind], count)
    for worker, count in db.execute(_COMMANDS):
        summary(worker).commands_issued = count
    for worker, outcome, count in db.execute(_ACKS):
        if outcome in _ACK_COUNTS:
            setattr(summary(worker), _ACK_COUNTS[outcome], count)
    for query in (_ACK_REJECTIONS, _VIOLATIONS):
        for worker, reason, count in db.execute(query):
            reasons = summary(worker).rejections_by_reason
            key = reason or "UNSPECIFIED"
            reasons[key] = reasons.get(key, 0) + count
    runs: dict[tuple[str, str, int], list[tuple[int, int]]] = defaultdict(list)
    for sender, topic, incarnation, first, last in db.execute(_LOSSES):
        runs[(sender, topic, incarnation)].append((first, last))
    for (sender, _, _), stream_runs in runs.items():
        row = summary(sender)
        for first, last in merged(stream_runs):
            row.gaps += 1
            row.messages_lost += last - first + 1
    for sender, count in db.execute(_ILLEGAL):
        summary(sender).illegal_stage_changes = count
    for row in workers.values():
        row.rejections_by_reason = dict(sorted(row.rejections_by_reason.items()))
    return RunReport(
        events=_count(db, "events"),
        commands=_count(db, "commands"),
        acks=_count(db, "acks"),
        field_reports=_count(db, "field_reports"),
        workers=[workers[name] for name in sorted(workers)],
    )


def _count(db: sqlite3.Connection, table: str) -> int:
    count: int = db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
    return count
