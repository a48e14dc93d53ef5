"""The telemetry store: bus messages into SQLite, one transaction per batch, idempotently."""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType

import msgspec

from leyline import (
    AdaptationCommand,
    CommandAck,
    FieldReport,
    SeedStateReport,
    SeedTelemetry,
    TelemetryEvent,
    WorkerHello,
)
from leyline.telemetry import SeedStageChanged
from services.sink import losses
from services.sink.losses import LossReason, Stream
from services.sink.rows import (
    INSERT_ACK,
    INSERT_COMMAND,
    INSERT_EVENT,
    INSERT_FIELD_REPORT,
    INSERT_HELLO,
    INSERT_SEED_REPORT,
    INSERT_SEED_TELEMETRY,
    StoredMessage,
    ack_row,
    command_row,
    event_row,
    field_report_row,
    hello_row,
    seed_report_row,
    seed_telemetry_row,
)
from services.sink.schema import MESSAGE_TABLES, StoreError, configure, migrate
from services.sink.stages import Repeat, StageJudge

#: Where the sink keeps its database unless told otherwise (relative to the working directory).
DEFAULT_PATH = Path("leyline-data") / "sink.db"

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
_EVENTS_BETWEEN = f"SELECT COUNT(*) FROM events {_BY_STREAM} AND sequence > ? AND sequence < ?"
_EVENT_SEQUENCES_BETWEEN = (
    f"SELECT sequence FROM events {_BY_STREAM} AND sequence > ? AND sequence < ?"
)
_EVENT_STORED = f"SELECT 1 FROM events {_BY_STREAM} AND sequence = ?"

_ROWS = {
    AdaptationCommand: (INSERT_COMMAND, command_row),
    CommandAck: (INSERT_ACK, ack_row),
    WorkerHello: (INSERT_HELLO, hello_row),
    FieldReport: (INSERT_FIELD_REPORT, field_report_row),
    SeedStateReport: (INSERT_SEED_REPORT, seed_report_row),
    SeedTelemetry: (INSERT_SEED_TELEMETRY, seed_telemetry_row),
}


class BatchResult(msgspec.Struct, frozen=True):
    """What one committed batch did: rows new, repeats ignored, illegal stage changes flagged,
    and sequences that loss rows held and the batch brought after all."""

    stored: int
    duplicates: int
    illegal: int
    recovered: int = 0


class TelemetryStore:
    """A SQLite file of every event, command, ack, hello and report the sink received.

    WAL with synchronous=NORMAL: readers (`leyline events`) never block the writer, and a
    committed batch survives a crash of the process. A power loss or kernel crash may undo
    the batches committed since the last WAL sync, never corrupting the file; a restarted
    sink repairs the streams it keeps whole (tel, cmd, ack) from their start, so what was
    undone is replayed from the senders' windows or becomes loss rows, never a silent hole.
    FULL (an fsync per commit) would buy only that the replay is not needed. Each
    `write_batch` is one transaction;
    a message is stored once per (sender, topic, incarnation, sequence) however often it
    arrives, and leaves every loss row that counted it missing in that same transaction.
    Stage changes are judged by a `StageJudge`; an illegal one is stored and flagged, never
    dropped.
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
        self._judge = StageJudge.from_history(connection)

    @property
    def connection(self) -> sqlite3.Connection:
        """The open connection, for the read-only queries in this package."""
        return self._connection

    @contextmanager
    def snapshot(self) -> Iterator[sqlite3.Connection]:
        """One read transaction: while the sink writes on, every query sees the same commit."""
        db = self._connection
        db.execute("BEGIN")
        try:
            yield db
        finally:
            db.execute("ROLLBACK")

    def write_batch(self, records: Iterable[StoredMessage]) -> BatchResult:
        """Store `records` in one transaction; on any error nothing of the batch is kept."""
        batch = list(records)
        events: list[tuple[object, ...]] = []
        others: dict[str, list[tuple[object, ...]]] = {}
        changes = _Changes(self._connection, self._judge, batch)
        connection = self._connection
        connection.execute("BEGIN IMMEDIATE")
        try:
            for record in batch:
                message = record.message
                if type(message) is TelemetryEvent:
                    if type(message.payload) is SeedStageChanged:
                        row = changes.row(record, message, message.payload)
                        if row is not None:
                            events.append(row)
                    else:
                        events.append(event_row(record, message))
                    continue
                known = _ROWS.get(type(message))
                if known is None:
                    raise TypeError(f"the sink does not store {type(message).__name__}")
                sql, build = known
                others.setdefault(sql, []).append(build(record, message))  # type: ignore[operator]
            stored = connection.executemany(INSERT_EVENT, events).rowcount if events else 0
            for sql, rows in others.items():
                stored += connection.executemany(sql, rows).rowcount
            recovered = losses.reconcile(connection, batch)
            connection.execute("COMMIT")
        except BaseException:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            # The judge saw stage changes that are now rolled back: rebuild it from the file.
            self._judge = StageJudge.from_history(connection)
            raise
        return BatchResult(stored, len(batch) - stored, changes.illegal, recovered)

    def record_loss(
        self,
        sender: str,
        channel: str,
        first_missing_sequence: int,
        last_missing_sequence: int,
        reason: LossReason,
        *,
        topic: str = "",
        incarnation: int = 0,
        recorded_at_ns: int | None = None,
    ) -> int:
        """Record as lost what of `first`..`last` is neither stored nor already recorded lost.

        Returns how many sequences that newly counts as lost (0 when it all was already).
        """
        if last_missing_sequence < first_missing_sequence:
            raise ValueError(
                f"last_missing_sequence {last_missing_sequence} is before "
                f"first_missing_sequence {first_missing_sequence}"
            )
        at = time.time_ns() if recorded_at_ns is None else recorded_at_ns
        stream = (sender, topic, incarnation)
        first, last = first_missing_sequence, last_missing_sequence
        connection = self._connection
        connection.execute("BEGIN IMMEDIATE")
        try:
            runs = losses.without(
                self.missing(sender, topic, incarnation, first, last),
                losses.recorded(connection, stream, first, last),
            )
            lost = losses.insert(connection, stream, channel, runs, at, reason)
            connection.execute("COMMIT")
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        return lost

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


class _Changes:
    """The stage changes of one batch: each new one judged, in arrival order."""

    def __init__(
        self, connection: sqlite3.Connection, judge: StageJudge, batch: list[StoredMessage]
    ) -> None:
        self._connection = connection
        self._judge = judge
        self._batch = batch
        self._taken: set[tuple[str, str, int, int]] = set()
        self._batch_sequences: dict[Stream, set[int]] = {}
        self.illegal = 0

    def row(
        self, record: StoredMessage, event: TelemetryEvent, change: SeedStageChanged
    ) -> tuple[object, ...] | None:
        """The judged event row of a change not stored yet; None for a repeat, which must
        neither be judged again nor move the judge."""
        stream = (record.sender, record.topic, record.incarnation)
        key = (*stream, record.sequence)
        taken = self._taken

        def stored() -> bool:
            if key in taken:
                return True
            return self._connection.execute(_EVENT_STORED, key).fetchone() is not None

        illegal = self._judge.judge(
            stream,
            record.sequence,
            event.slot_id or change.seed_id,
            change.from_stage,
            change.to_stage,
            stored,
            self._complete,
        )
        if isinstance(illegal, Repeat):
            return None
        taken.add(key)
        self.illegal += illegal is not None
        return event_row(record, event, illegal)

    def _complete(self, stream: Stream, after: int, before: int) -> bool:
        """Whether this batch and the file hold every sequence strictly between the two."""
        wanted = before - after - 1
        params = (*stream, after, before)
        held = self._connection.execute(_EVENTS_BETWEEN, params).fetchone()[0]
        if held == wanted:
            return True
        sequences = self._batch_sequences.get(stream)
        if sequences is None:
            sequences = self._batch_sequences[stream] = {
                r.sequence for r in self._batch if (r.sender, r.topic, r.incarnation) == stream
            }
        arriving = {s for s in sequences if after < s < before}
        if held + len(arriving) < wanted:
            return False
        # Few enough to list: at most one batch more than the file holds.
        stored = {row[0] for row in self._connection.execute(_EVENT_SEQUENCES_BETWEEN, params)}
        return len(stored | arriving) == wanted
