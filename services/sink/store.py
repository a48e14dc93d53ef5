"""The telemetry store: bus messages into SQLite, one transaction per batch, idempotently."""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType

import msgspec

from leyline import (
    AdaptationCommand,
    CommandAck,
    FieldReport,
    LifecycleGuard,
    SeedStage,
    SeedStateReport,
    TelemetryEvent,
)
from leyline.telemetry import SeedStageChanged
from services.sink.rows import (
    INSERT_ACK,
    INSERT_COMMAND,
    INSERT_EVENT,
    INSERT_FIELD_REPORT,
    INSERT_SEED_REPORT,
    StoredMessage,
    ack_row,
    command_row,
    event_row,
    field_report_row,
    seed_report_row,
)
from services.sink.schema import MESSAGE_TABLES, StoreError, configure, migrate

#: Where the sink keeps its database unless told otherwise (relative to the working directory).
DEFAULT_PATH = Path("leyline-data") / "sink.db"

_INSERT_STAGE = (
    "INSERT INTO stage_history (sender, slot_id, seed_id, from_stage, to_stage, topic,"
    " incarnation, sequence, sent_ns, illegal) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_INSERT_LOSS = (
    "INSERT OR IGNORE INTO losses (sender, channel, topic, incarnation, first_missing_sequence,"
    " last_missing_sequence, recorded_at_ns, reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
# The latest stage of every slot: SQLite returns the row of MAX(id) for the bare columns.
_LATEST_STAGES = (
    "SELECT sender, slot_id, to_stage, MAX(id) FROM stage_history GROUP BY sender, slot_id"
)
_BY_STREAM = "WHERE sender = ? AND topic = ? AND incarnation = ?"
_MAX_SEQUENCE = (
    "SELECT MAX(m) FROM ("
    + " UNION ALL ".join(
        f"SELECT MAX(sequence) AS m FROM {table} {_BY_STREAM}" for table in MESSAGE_TABLES
    )
    + ")"
)
_SEQUENCES = (
    " UNION ALL ".join(f"SELECT sequence FROM {table} {_BY_STREAM}" for table in MESSAGE_TABLES)
    + " ORDER BY sequence"
)


class BatchResult(msgspec.Struct, frozen=True):
    """What one committed batch did: rows new, repeats ignored, illegal stage changes flagged."""

    stored: int
    duplicates: int
    illegal: int


class TelemetryStore:
    """A SQLite file of every event, command, ack and report the sink received.

    WAL with synchronous=NORMAL: readers (`leyline events`) never block the writer, and a
    committed batch survives a crash of the process. Each `write_batch` is one transaction;
    a message is stored once per (sender, topic, incarnation, sequence) however often it
    arrives. Stage
    changes pass through a `LifecycleGuard` per (sender, slot); an illegal one is stored and
    flagged, never dropped.
    """

    def __init__(self, path: str | os.PathLike[str], *, create: bool = True) -> None:
        self.path = Path(path)
        if not create and not self.path.is_file():
            raise StoreError(f"no sink database at {self.path}")
        try:
            if create:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                connection = sqlite3.connect(self.path, isolation_level=None)
            else:
                uri = f"{self.path.resolve().as_uri()}?mode=rw"
                connection = sqlite3.connect(uri, uri=True, isolation_level=None)
        except sqlite3.Error as error:
            raise StoreError(f"cannot open {self.path}: {error}") from error
        try:
            configure(connection)
            migrate(connection, create=create)
        except (sqlite3.DatabaseError, StoreError) as error:
            connection.close()
            raise StoreError(f"{self.path}: {error}") from error
        self._connection = connection
        self._guard = self._committed_guard()

    @property
    def connection(self) -> sqlite3.Connection:
        """The open connection, for the read-only queries in this package."""
        return self._connection

    def write_batch(self, records: Iterable[StoredMessage]) -> BatchResult:
        """Store `records` in one transaction; on any error nothing of the batch is kept."""
        events: list[tuple[object, ...]] = []
        commands: list[tuple[object, ...]] = []
        acks: list[tuple[object, ...]] = []
        field_reports: list[tuple[object, ...]] = []
        seed_reports: list[tuple[object, ...]] = []
        stages: list[tuple[object, ...]] = []
        received = stored = illegal = 0
        connection = self._connection
        connection.execute("BEGIN IMMEDIATE")
        try:
            for record in records:
                received += 1
                message = record.message
                if isinstance(message, TelemetryEvent):
                    if isinstance(message.payload, SeedStageChanged):
                        stage = self._store_stage_change(record, message, message.payload)
                        if stage is not None:
                            stages.append(stage)
                            illegal += stage[-1] is not None
                    else:
                        events.append(event_row(record, message))
                elif isinstance(message, AdaptationCommand):
                    commands.append(command_row(record, message))
                elif isinstance(message, CommandAck):
                    acks.append(ack_row(record, message))
                elif isinstance(message, FieldReport):
                    field_reports.append(field_report_row(record, message))
                elif isinstance(message, SeedStateReport):
                    seed_reports.append(seed_report_row(record, message))
                else:
                    raise TypeError(f"the sink does not store {type(message).__name__}")
            for sql, rows in (
                (INSERT_EVENT, events),
                (INSERT_COMMAND, commands),
                (INSERT_ACK, acks),
                (INSERT_FIELD_REPORT, field_reports),
                (INSERT_SEED_REPORT, seed_reports),
            ):
                if rows:
                    stored += connection.executemany(sql, rows).rowcount
            connection.executemany(_INSERT_STAGE, stages)
            stored += len(stages)
            connection.execute("COMMIT")
        except BaseException:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            # The guard saw stage changes that are now rolled back: rebuild it from the file.
            self._guard = self._committed_guard()
            raise
        return BatchResult(stored, received - stored, illegal)

    def _store_stage_change(
        self, record: StoredMessage, event: TelemetryEvent, change: SeedStageChanged
    ) -> tuple[object, ...] | None:
        """Judge, store and track one reported change; its history row (verdict last) if new."""
        slot = event.slot_id or change.seed_id
        verdict = self._guard.check_reported(
            record.sender, slot, change.from_stage, change.to_stage
        )
        illegal = None if verdict.allowed else verdict.detail
        # One at a time: only this statement's rowcount tells a new change from a repeat,
        # and a repeat must neither be judged again nor move the guard.
        if self._connection.execute(INSERT_EVENT, event_row(record, event, illegal)).rowcount == 0:
            return None
        # Track what the worker says its slot now is, so one bad edge is flagged once and the
        # changes after it are judged from where the worker really stands.
        self._guard.record(record.sender, slot, change.to_stage)
        return (
            record.sender,
            slot,
            change.seed_id,
            change.from_stage.name,
            change.to_stage.name,
            record.topic,
            record.incarnation,
            record.sequence,
            record.sent_ns,
            illegal,
        )

    def _committed_guard(self) -> LifecycleGuard:
        guard = LifecycleGuard()
        for sender, slot, stage, _ in self._connection.execute(_LATEST_STAGES):
            guard.record(sender, slot, SeedStage[stage])
        return guard

    def record_loss(
        self,
        sender: str,
        channel: str,
        first_missing_sequence: int,
        last_missing_sequence: int,
        reason: str,
        *,
        topic: str = "",
        incarnation: int = 0,
        recorded_at_ns: int | None = None,
    ) -> bool:
        """Record messages known lost for good; False when this gap was already recorded."""
        if last_missing_sequence < first_missing_sequence:
            raise ValueError(
                f"last_missing_sequence {last_missing_sequence} is before "
                f"first_missing_sequence {first_missing_sequence}"
            )
        at = time.time_ns() if recorded_at_ns is None else recorded_at_ns
        cursor = self._connection.execute(
            _INSERT_LOSS,
            (
                sender,
                channel,
                topic,
                incarnation,
                first_missing_sequence,
                last_missing_sequence,
                at,
                reason,
            ),
        )
        return cursor.rowcount == 1

    def max_sequence(self, sender: str, topic: str, incarnation: int = 0) -> int | None:
        """The highest sequence stored from one sender's stream; None before the first."""
        params = (sender, topic, incarnation) * len(MESSAGE_TABLES)
        highest: int | None = self._connection.execute(_MAX_SEQUENCE, params).fetchone()[0]
        return highest

    def missing(
        self, sender: str, topic: str, incarnation: int, first: int, last: int
    ) -> list[tuple[int, int]]:
        """The runs of sequences in `first`..`last` of one stream that are not stored."""
        stored = [s for s in self.sequences(sender, topic, incarnation) if first <= s <= last]
        runs: list[tuple[int, int]] = []
        expected = first
        for sequence in stored:
            if sequence > expected:
                runs.append((expected, sequence - 1))
            expected = sequence + 1
        if expected <= last:
            runs.append((expected, last))
        return runs

    def sequences(self, sender: str, topic: str, incarnation: int = 0) -> list[int]:
        """Every sequence stored from one sender's stream, ascending (for finding gaps)."""
        params = (sender, topic, incarnation) * len(MESSAGE_TABLES)
        return [row[0] for row in self._connection.execute(_SEQUENCES, params)]

    def close(self) -> None:
        self._connection.close()

    def __enter__(self) -> TelemetryStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
