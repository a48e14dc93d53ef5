"""The checker: what the durable records say about the delivery guarantees after a run.

It reads only what survives a crash: the controller's command journal, each worker's
checkpoint, and the sink's database. Commands: every journaled command is applied at most
once per worker (counted per (worker, sequence) across incarnations, from the workers'
COMMAND_EXECUTED / COMMAND_FAILED events), in sequence order, and every command the
controller saw settled is applied according to the worker's checkpoint. A state query
(REQUEST_STATE) changes nothing and is not checkpointed on its own: one answered again after
a crash is not a duplicate, and one past the checkpoint is neither rolled back nor lost.
Telemetry: every sequence of every stream on `tel` up to the highest one known is stored or
inside a loss row, and a loss row is excused only by its publisher's death or a gap beyond
the window.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import msgspec
import torch

from leyline import CommandType
from services.controller.journal import UNAPPLIED, CommandJournal
from services.sink.losses import LossReason, merged, subtract, without
from services.sink.store import TelemetryStore

_EXECUTIONS = (
    "SELECT sender, incarnation, sequence, json_extract(message, '$.payload.sequence'),"
    " json_extract(message, '$.payload.command_type')"
    " FROM events WHERE channel = 'tel'"
    " AND event_type IN ('COMMAND_EXECUTED', 'COMMAND_FAILED')"
    " ORDER BY sender, incarnation, sequence"
)
_TEL_SEQUENCES = "SELECT sender, topic, incarnation, sequence FROM events WHERE channel = 'tel'"
_TEL_LOSSES = (
    "SELECT sender, topic, incarnation, first_missing_sequence, last_missing_sequence, reason"
    " FROM losses WHERE channel = 'tel'"
)
_LIVENESS = (
    "SELECT event_type, sender, json_extract(message, '$.payload.peer'),"
    " json_extract(message, '$.payload.others') FROM events"
    " WHERE event_type IN ('PEER_STALE', 'PEER_RECOVERED')"
)

Stream = tuple[str, str, int]  # sender, topic, incarnation


class Counts(msgspec.Struct, kw_only=True):
    """The run in numbers: what the checker's verdict is about."""

    commands_issued: int = 0
    commands_applied: int = 0
    commands_duplicated: int = 0
    commands_lost: int = 0
    commands_pending: int = 0
    #: In flight when the worker's run ended: settled UNAPPLIED on its farewell.
    commands_unapplied: int = 0
    commands_unwitnessed: int = 0
    events_sent: int = 0
    events_stored: int = 0
    events_lost: int = 0
    events_unaccounted: int = 0
    #: Peers reported stale and back (an event names every peer of one check).
    peer_stale: int = 0
    peer_recovered: int = 0


class Verdict(msgspec.Struct, kw_only=True):
    """Passed when `failures` is empty; each failure is one sentence naming what broke."""

    counts: Counts
    failures: list[str] = msgspec.field(default_factory=list)
    #: (reporter, peer) of every peer a stored PEER_STALE event names.
    stale_reports: list[tuple[str, str]] = msgspec.field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures


class RunFiles(msgspec.Struct, frozen=True, kw_only=True):
    """Where a stack keeps the records the checker reads."""

    journal: Path
    sink_db: Path
    checkpoints: Path
    replay_window: int
    sink_id: str = "sink"

    @classmethod
    def of(cls, data_dir: str | Path, replay_window: int) -> RunFiles:
        """The files of a stack planned by `plan_stack` in `data_dir`."""
        data = Path(data_dir)
        return cls(
            journal=data / "controller-journal.db",
            sink_db=data / "sink.db",
            checkpoints=data / "checkpoints",
            replay_window=replay_window,
        )


def last_applied(checkpoints: Path, worker: str) -> int:
    """The last command sequence a worker's checkpoint says it applied (0 without one)."""
    path = checkpoints / f"{worker}.pt"
    if not path.is_file():
        return 0
    state = torch.load(path, weights_only=True)
    return int(state["commands"]["last_applied"])


def check(files: RunFiles) -> Verdict:
    """Judge one finished run from its files."""
    verdict = Verdict(counts=Counts())
    journal = CommandJournal(files.journal)
    try:
        entries = journal.entries()
    finally:
        journal.close()
    with TelemetryStore(files.sink_db, create=False) as store:
        db = store.connection
        executions = db.execute(_EXECUTIONS).fetchall()
        sequences = db.execute(_TEL_SEQUENCES).fetchall()
        losses = db.execute(_TEL_LOSSES).fetchall()
        liveness = db.execute(_LIVENESS).fetchall()
    telemetry = _check_telemetry(verdict, files, sequences, losses)
    _check_commands(verdict, files, entries, executions, telemetry)
    for event_type, reporter, peer, others in liveness:
        # One event names every peer that changed at one check: `peer` and its `others`.
        peers = [peer, *(other["peer"] for other in json.loads(others or "[]"))]
        if event_type == "PEER_STALE":
            verdict.counts.peer_stale += len(peers)
            verdict.stale_reports.extend((reporter, p) for p in peers)
        else:
            verdict.counts.peer_recovered += len(peers)
    return verdict


def unaccounted_events(files: RunFiles) -> int:
    """Sequences the sink knows were sent but holds neither stored nor lost (live or not)."""
    with TelemetryStore(files.sink_db, create=False) as store:
        sequences = store.connection.execute(_TEL_SEQUENCES).fetchall()
        losses = store.connection.execute(_TEL_LOSSES).fetchall()
    verdict = Verdict(counts=Counts())
    _check_telemetry(verdict, files, sequences, losses)
    return verdict.counts.events_unaccounted


def _check_commands(
    verdict: Verdict,
    files: RunFiles,
    entries: list[tuple[str, int, str, str | None]],
    executions: list[tuple[str, int, int, int | None, str | None]],
    lossy_senders: set[str],
) -> None:
    counts = verdict.counts
    journaled: dict[str, list[tuple[int, str | None]]] = defaultdict(list)
    for worker, sequence, _, outcome in entries:
        journaled[worker].append((sequence, outcome))
    # Every execution a worker reported, in the order it reported them (incarnation, bus seq).
    reported: dict[str, list[int]] = defaultdict(list)
    queries: dict[str, set[int]] = defaultdict(set)
    for sender, _, _, command_sequence, command_type in executions:
        if command_sequence:
            reported[sender].append(int(command_sequence))
            if command_type == CommandType.REQUEST_STATE.name:
                queries[sender].add(int(command_sequence))
    for worker, commands in sorted(journaled.items()):
        counts.commands_issued += len(commands)
        expected = list(range(1, len(commands) + 1))
        if [sequence for sequence, _ in commands] != expected:
            verdict.failures.append(f"{worker}: journal sequences are not 1..{len(commands)}")
        applied_up_to = last_applied(files.checkpoints, worker)
        seen = reported.get(worker, [])
        answered = queries.get(worker, set())
        times: dict[int, int] = defaultdict(int)
        for sequence in seen:
            times[sequence] += 1
        for sequence in answered:
            times[sequence] = 1  # a query answered again changes nothing
        duplicated = sum(n - 1 for n in times.values() if n > 1)
        counts.commands_duplicated += duplicated
        if duplicated:
            again = sorted(s for s, n in times.items() if n > 1)
            verdict.failures.append(f"{worker}: commands applied more than once: {again[:20]}")
        first_order = list(dict.fromkeys(seen))
        if first_order != sorted(first_order):
            verdict.failures.append(f"{worker}: commands applied out of order: {first_order[:40]}")
        beyond = [s for s in times if s > applied_up_to and s not in answered]
        if beyond:
            verdict.failures.append(
                f"{worker}: reported applying {sorted(beyond)[:20]} but its checkpoint stops "
                f"at {applied_up_to} (an application was rolled back)"
            )
        for sequence, outcome in commands:
            if sequence <= applied_up_to:
                counts.commands_applied += 1
                if sequence not in times:
                    counts.commands_unwitnessed += 1
                    # Its events died with the worker (the ack too, so the hello settled it
                    # as DUPLICATE) or fell in an explicit loss row; otherwise they vanished.
                    if outcome != "DUPLICATE" and worker not in lossy_senders:
                        verdict.failures.append(
                            f"{worker}: command {sequence} was applied ({outcome}) but no "
                            "execution event was stored and no loss recorded"
                        )
            elif sequence in answered:
                counts.commands_applied += 1
            elif outcome is None:
                counts.commands_pending += 1
            elif outcome == UNAPPLIED:
                counts.commands_unapplied += 1
            else:
                counts.commands_lost += 1
                verdict.failures.append(
                    f"{worker}: command {sequence} was settled {outcome} in the journal but "
                    f"the worker's checkpoint stops at {applied_up_to}"
                )
        unknown = sorted(s for s in times if s > len(commands))
        if unknown:
            verdict.failures.append(f"{worker}: executed commands never journaled: {unknown[:20]}")


def _check_telemetry(
    verdict: Verdict,
    files: RunFiles,
    sequences: list[tuple[str, str, int, int]],
    losses: list[tuple[str, str, int, int, int, str]],
) -> set[str]:
    """Check every tel stream; returns the senders with any loss row."""
    counts = verdict.counts
    stored: dict[Stream, set[int]] = defaultdict(set)
    for sender, topic, incarnation, sequence in sequences:
        if sender != files.sink_id:  # the sink's own events never cross the bus
            stored[(sender, topic, incarnation)].add(sequence)
    lost: dict[Stream, list[tuple[int, int, str]]] = defaultdict(list)
    for sender, topic, incarnation, first, last, reason in losses:
        lost[(sender, topic, incarnation)].append((first, last, reason))
    latest: dict[str, int] = {}
    for sender, _, incarnation in (*stored, *lost):
        latest[sender] = max(latest.get(sender, 0), incarnation)
    for stream in sorted({*stored, *lost}):
        sender, topic, incarnation = stream
        have = sorted(stored.get(stream, ()))
        # Runs, never ranges spelled out: a hostile sequence makes a loss row 2**63 long.
        runs = merged((first, last) for first, last, _ in lost.get(stream, ()))
        lost_only = [part for run in runs for part in subtract(run, have)]
        high = max(have[-1] if have else 0, runs[-1][1] if runs else 0)
        counts.events_sent += high
        counts.events_stored += len(have)
        counts.events_lost += sum(last - first + 1 for first, last in lost_only)
        holes = without(subtract((1, high), have), runs)
        missing = sum(last - first + 1 for first, last in holes)
        if missing:
            counts.events_unaccounted += missing
            verdict.failures.append(
                f"{topic} incarnation {incarnation}: {missing} sequences neither stored nor "
                f"recorded lost: {_shown(holes)}"
            )
        if incarnation != latest[sender]:
            continue  # the window died with this incarnation: whatever it lost is excused
        for first, last, reason in lost.get(stream, ()):
            if reason != LossReason.BEYOND_WINDOW or high < last + files.replay_window:
                verdict.failures.append(
                    f"{topic} incarnation {incarnation}: {first}..{last} recorded lost "
                    f"({reason}) though the publisher's window of {files.replay_window} "
                    f"still held it (highest sequence {high})"
                )
    return {sender for sender, _, _ in lost}


def _shown(runs: list[tuple[int, int]], most: int = 20) -> str:
    """The first runs, each as `n` or `first..last`."""
    parts = [str(first) if first == last else f"{first}..{last}" for first, last in runs[:most]]
    return "[" + ", ".join(parts) + (", ..." if len(runs) > most else "") + "]"


def summary(verdict: Verdict) -> str:
    """The verdict in a few lines of text."""
    c = verdict.counts
    lines = [
        "verdict: " + ("PASS" if verdict.passed else f"FAIL ({len(verdict.failures)})"),
        f"commands: {c.commands_issued} issued, {c.commands_applied} applied, "
        f"{c.commands_duplicated} duplicated, {c.commands_lost} lost, "
        f"{c.commands_pending} pending, {c.commands_unwitnessed} applied without a stored event",
        f"events:   {c.events_sent} sent, {c.events_stored} stored, {c.events_lost} lost "
        f"(explicit loss rows), {c.events_unaccounted} unaccounted",
        f"liveness: {c.peer_stale} PEER_STALE, {c.peer_recovered} PEER_RECOVERED",
    ]
    lines.extend(f"  FAIL {failure}" for failure in verdict.failures)
    return "\n".join(lines)
