"""The sink's SQLite schema, versioned with `PRAGMA user_version`."""

from __future__ import annotations

import sqlite3

from leyline import LeylineError, SeedStage

#: Bumped whenever the tables change; a store refuses a file written by a newer schema.
SCHEMA_VERSION = 3


def _stage_name(value: str) -> str:
    """SQL naming the `SeedStage` whose number is `value` (the JSON holds stages as numbers).

    A new stage is a contract change, and with it a schema version that rewrites this view.
    """
    cases = " ".join(f"WHEN {int(stage)} THEN '{stage.name}'" for stage in SeedStage)
    return f"CASE {value} {cases} END"


# Every table keeps the full message as JSON for fidelity, beside typed columns to query on.
# The bus numbers messages per (sender, topic) and starts again at 1 when a sender restarts
# with a new incarnation, so (sender, topic, incarnation, sequence) names one message: it is
# the idempotency key. A narrower key would drop a restarted worker's messages as repeats.
_TABLES = """
CREATE TABLE events (
    id INTEGER PRIMARY KEY,
    sender TEXT NOT NULL,
    channel TEXT NOT NULL,
    topic TEXT NOT NULL,
    incarnation INTEGER NOT NULL,
    sequence INTEGER NOT NULL,
    sent_ns INTEGER NOT NULL,
    event_type TEXT NOT NULL,
    seed_id TEXT,
    slot_id TEXT,
    epoch INTEGER,
    severity TEXT NOT NULL,
    illegal TEXT,
    message TEXT NOT NULL,
    UNIQUE (sender, topic, incarnation, sequence)
);
CREATE INDEX events_by_time ON events (sent_ns);
CREATE INDEX events_by_seed ON events (seed_id, sent_ns);
CREATE INDEX events_by_type ON events (event_type, sent_ns);

CREATE TABLE commands (
    id INTEGER PRIMARY KEY,
    sender TEXT NOT NULL,
    channel TEXT NOT NULL,
    topic TEXT NOT NULL,
    incarnation INTEGER NOT NULL,
    sequence INTEGER NOT NULL,
    sent_ns INTEGER NOT NULL,
    worker TEXT NOT NULL,
    command_id TEXT NOT NULL,
    command_type TEXT NOT NULL,
    issued_ns INTEGER NOT NULL,
    seed_id TEXT,
    slot_id TEXT,
    message TEXT NOT NULL,
    UNIQUE (sender, topic, incarnation, sequence)
);
CREATE INDEX commands_by_worker ON commands (worker);
CREATE INDEX commands_by_id ON commands (command_id);

CREATE TABLE acks (
    id INTEGER PRIMARY KEY,
    sender TEXT NOT NULL,
    channel TEXT NOT NULL,
    topic TEXT NOT NULL,
    incarnation INTEGER NOT NULL,
    sequence INTEGER NOT NULL,
    sent_ns INTEGER NOT NULL,
    worker TEXT NOT NULL,
    command_id TEXT NOT NULL,
    command_type TEXT NOT NULL,
    outcome TEXT NOT NULL,
    reason TEXT NOT NULL,
    stage_after TEXT,
    message TEXT NOT NULL,
    UNIQUE (sender, topic, incarnation, sequence)
);
CREATE INDEX acks_by_worker ON acks (worker, outcome);
CREATE INDEX acks_by_command ON acks (command_id);

CREATE TABLE field_reports (
    id INTEGER PRIMARY KEY,
    sender TEXT NOT NULL,
    channel TEXT NOT NULL,
    topic TEXT NOT NULL,
    incarnation INTEGER NOT NULL,
    sequence INTEGER NOT NULL,
    sent_ns INTEGER NOT NULL,
    report_id TEXT NOT NULL,
    seed_id TEXT NOT NULL,
    slot_id TEXT NOT NULL,
    blueprint_id TEXT NOT NULL,
    final_stage TEXT NOT NULL,
    success INTEGER NOT NULL,
    message TEXT NOT NULL,
    UNIQUE (sender, topic, incarnation, sequence)
);

CREATE TABLE seed_reports (
    id INTEGER PRIMARY KEY,
    sender TEXT NOT NULL,
    channel TEXT NOT NULL,
    topic TEXT NOT NULL,
    incarnation INTEGER NOT NULL,
    sequence INTEGER NOT NULL,
    sent_ns INTEGER NOT NULL,
    seed_id TEXT NOT NULL,
    slot_id TEXT NOT NULL,
    stage TEXT NOT NULL,
    message TEXT NOT NULL,
    UNIQUE (sender, topic, incarnation, sequence)
);

CREATE TABLE losses (
    id INTEGER PRIMARY KEY,
    sender TEXT NOT NULL,
    channel TEXT NOT NULL,
    topic TEXT NOT NULL,
    incarnation INTEGER NOT NULL,
    first_missing_sequence INTEGER NOT NULL,
    last_missing_sequence INTEGER NOT NULL,
    recorded_at_ns INTEGER NOT NULL,
    reason TEXT NOT NULL,
    UNIQUE (sender, channel, topic, incarnation, first_missing_sequence),
    CHECK (last_missing_sequence >= first_missing_sequence)
);

CREATE TABLE stage_history (
    id INTEGER PRIMARY KEY,
    sender TEXT NOT NULL,
    slot_id TEXT NOT NULL,
    seed_id TEXT,
    from_stage TEXT NOT NULL,
    to_stage TEXT NOT NULL,
    topic TEXT NOT NULL,
    incarnation INTEGER NOT NULL,
    sequence INTEGER NOT NULL,
    sent_ns INTEGER NOT NULL,
    illegal TEXT
);
CREATE INDEX stage_history_by_slot ON stage_history (sender, slot_id);
"""

# Version 2: the WorkerHello a worker sends on its ack stream is part of the audit trail, so
# every sequence of a stream the sink keeps is stored or inside a loss row. The stage history
# becomes a view of the stage-change events (which carry the verdict in `illegal`): one row
# written per change instead of two, and no second copy to keep in step.
_VERSION_2 = f"""
DROP TABLE stage_history;
CREATE VIEW stage_history AS
SELECT id, sender,
    COALESCE(slot_id, json_extract(message, '$.payload.seed_id')) AS slot_id,
    json_extract(message, '$.payload.seed_id') AS seed_id,
    {_stage_name("json_extract(message, '$.payload.from_stage')")} AS from_stage,
    {_stage_name("json_extract(message, '$.payload.to_stage')")} AS to_stage,
    topic, incarnation, sequence, sent_ns, illegal
FROM events WHERE event_type = 'SEED_STAGE_CHANGED';
CREATE TABLE hellos (
    id INTEGER PRIMARY KEY,
    sender TEXT NOT NULL,
    channel TEXT NOT NULL,
    topic TEXT NOT NULL,
    incarnation INTEGER NOT NULL,
    sequence INTEGER NOT NULL,
    sent_ns INTEGER NOT NULL,
    worker TEXT NOT NULL,
    last_applied_sequence INTEGER NOT NULL,
    message TEXT NOT NULL,
    UNIQUE (sender, topic, incarnation, sequence)
);
"""

# Version 3: the per-epoch SeedTelemetry a worker sends on `rep` for each live seed (gradient
# health, accuracy, alpha), so a seed's course is known every epoch, not only at stage changes.
# An older file simply has none stored before it was migrated.
_VERSION_3 = """
CREATE TABLE seed_telemetry (
    id INTEGER PRIMARY KEY,
    sender TEXT NOT NULL,
    channel TEXT NOT NULL,
    topic TEXT NOT NULL,
    incarnation INTEGER NOT NULL,
    sequence INTEGER NOT NULL,
    sent_ns INTEGER NOT NULL,
    seed_id TEXT NOT NULL,
    layer_id TEXT NOT NULL,
    epoch INTEGER NOT NULL,
    stage TEXT NOT NULL,
    alpha REAL NOT NULL,
    accuracy REAL NOT NULL,
    accuracy_delta REAL NOT NULL,
    gradient_norm REAL NOT NULL,
    gradient_health REAL NOT NULL,
    message TEXT NOT NULL,
    UNIQUE (sender, topic, incarnation, sequence)
);
CREATE INDEX seed_telemetry_by_seed ON seed_telemetry (sender, seed_id, epoch);
"""

#: The script that brings a file from version `n - 1` to `n`, for every `n`.
MIGRATIONS = {1: _TABLES, 2: _VERSION_2, 3: _VERSION_3}

#: The tables that hold bus messages, each keyed by (sender, topic, incarnation, sequence).
MESSAGE_TABLES = (
    "events", "commands", "acks", "hellos", "field_reports", "seed_reports", "seed_telemetry",
)  # fmt: skip


class StoreError(LeylineError):
    """The database cannot be used: missing, not SQLite, or written by a newer schema."""


def configure(connection: sqlite3.Connection) -> None:
    """WAL so readers never block the writer; NORMAL sync, durable at every WAL checkpoint."""
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=NORMAL")


def migrate(connection: sqlite3.Connection, *, create: bool) -> None:
    """Bring an empty or older file to the current schema; refuse unknown or newer ones."""
    if _version(connection) == SCHEMA_VERSION:
        return
    # IMMEDIATE takes the write lock first, so two sinks opening one new file cannot both create.
    connection.execute("BEGIN IMMEDIATE")
    try:
        version = _version(connection)
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"schema version {version} is newer than this sink's {SCHEMA_VERSION}; "
                "upgrade leyline"
            )
        if version == 0 and not create:
            raise StoreError("not a leyline sink database (schema version 0)")
        for step in range(version + 1, SCHEMA_VERSION + 1):
            for statement in MIGRATIONS[step].split(";"):
                if statement.strip():
                    connection.execute(statement)
        connection.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        connection.execute("COMMIT")
    except BaseException:
        connection.execute("ROLLBACK")
        raise


def _version(connection: sqlite3.Connection) -> int:
    version: int = connection.execute("PRAGMA user_version").fetchone()[0]
    return version
