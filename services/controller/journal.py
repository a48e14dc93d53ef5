"""The controller's command journal: a command counts as issued once its row is committed.

SQLite in WAL mode with synchronous=FULL, so a committed command survives a crash of the
process or the machine. Each worker's commands are numbered 1, 2, ... in the order they were
issued; a restarted controller continues the numbering from the journal.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import msgspec

from leyline import AckOutcome, AdaptationCommand, decode, encode

_SCHEMA = """
CREATE TABLE IF NOT EXISTS commands (
    worker TEXT NOT NULL,
    sequence INTEGER NOT NULL,
    command_id TEXT NOT NULL UNIQUE,
    slot_id TEXT NOT NULL,
    payload BLOB NOT NULL,
    issued_ns INTEGER NOT NULL,
    outcome TEXT,
    acked_ns INTEGER,
    PRIMARY KEY (worker, sequence)
);
"""


class JournalEntry(msgspec.Struct, frozen=True):
    """One journaled command and where it was sent."""

    worker_id: str
    slot_id: str
    command: AdaptationCommand
    issued_ns: int


class CommandJournal:
    """Durable, ordered record of every command issued, and of the outcome acked for it."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)

    def issue(self, worker_id: str, slot_id: str, command: AdaptationCommand) -> JournalEntry:
        """Number `command` for `worker_id` and commit it; only then may it be sent."""
        with self._db:  # one transaction: the number and the row commit together
            (last,) = self._db.execute(
                "SELECT COALESCE(MAX(sequence), 0) FROM commands WHERE worker = ?", (worker_id,)
            ).fetchone()
            numbered = msgspec.structs.replace(command, sequence=last + 1)
            now = time.time_ns()
            self._db.execute(
                "INSERT INTO commands (worker, sequence, command_id, slot_id, payload, issued_ns)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (worker_id, last + 1, numbered.command_id, slot_id, encode(numbered), now),
            )
        return JournalEntry(worker_id, slot_id, numbered, now)

    def acknowledge(self, command_id: str, outcome: AckOutcome) -> bool:
        """Record the first acknowledgement of a command; False if unknown or already acked."""
        with self._db:
            cursor = self._db.execute(
                "UPDATE commands SET outcome = ?, acked_ns = ? "
                "WHERE command_id = ? AND outcome IS NULL",
                (outcome.name, time.time_ns(), command_id),
            )
        return cursor.rowcount == 1

    def unacked(self, worker_id: str | None = None, after: int = 0) -> list[JournalEntry]:
        """Commands not yet acknowledged (of one worker, past a sequence), in issue order."""
        query = "SELECT worker, slot_id, payload, issued_ns FROM commands WHERE outcome IS NULL"
        params: tuple[object, ...] = ()
        if worker_id is not None:
            query += " AND worker = ? AND sequence > ?"
            params = (worker_id, after)
        query += " ORDER BY worker, sequence"
        return [self._entry(row) for row in self._db.execute(query, params)]

    def settled(self, worker_id: str, after: int) -> list[JournalEntry]:
        """Acknowledged commands of one worker past a sequence, in order.

        A worker does not checkpoint a state query on its own, so after a crash its hello may
        name a sequence below one it had acknowledged; these it must be sent again.
        """
        rows = self._db.execute(
            "SELECT worker, slot_id, payload, issued_ns FROM commands"
            " WHERE outcome IS NOT NULL AND worker = ? AND sequence > ? ORDER BY sequence",
            (worker_id, after),
        )
        return [self._entry(row) for row in rows]

    def entries(self) -> list[tuple[str, int, str, str | None]]:
        """(worker, sequence, command_id, outcome) of every command, in order: for checkers."""
        rows = self._db.execute(
            "SELECT worker, sequence, command_id, outcome FROM commands ORDER BY worker, sequence"
        )
        return [(w, s, c, o) for w, s, c, o in rows]

    def close(self) -> None:
        self._db.close()

    @staticmethod
    def _entry(row: tuple[str, str, bytes, int]) -> JournalEntry:
        worker, slot, payload, issued = row
        command = decode(payload)
        assert isinstance(command, AdaptationCommand)
        return JournalEntry(worker, slot, command, issued)
