"""The controller's command journal: a command counts as issued once its row is committed.

SQLite in WAL mode with synchronous=FULL, so a committed command survives a crash of the
process or the machine. Each worker's commands are numbered 1, 2, ... in the order they were
issued; a restarted controller continues the numbering from the journal. A decision batch's
commands commit in one transaction (`issue_many`): one fsync for the batch, not one each.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path

import msgspec

from leyline import AckOutcome, AdaptationCommand
from leyline.wire import encode
from services.controller.commands import numbered

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


#: The journal's outcome for a command the worker's run ended before (never applied): the
#: worker's own outcomes are `AckOutcome` names.
UNAPPLIED = "UNAPPLIED"

_DECODE = msgspec.msgpack.Decoder(AdaptationCommand).decode
_INSERT = (
    "INSERT INTO commands (worker, sequence, command_id, slot_id, payload, issued_ns)"
    " VALUES (?, ?, ?, ?, ?, ?)"
)


class JournalEntry(msgspec.Struct, frozen=True, gc=False):
    """One journaled command, as the bytes sent, and where it was sent."""

    worker_id: str
    slot_id: str
    command_id: str
    sequence: int
    #: The numbered command as encoded on the wire.
    payload: bytes
    issued_ns: int

    @property
    def command(self) -> AdaptationCommand:
        """The command itself, decoded (and so validated) from its bytes."""
        return _DECODE(self.payload)


class CommandJournal:
    """Durable, ordered record of every command issued, and of the outcome acked for it."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        # Each worker's last committed sequence, read from the journal on first use. The
        # controller is the journal's one writer; were another to write, the (worker, sequence)
        # primary key would refuse the batch rather than number a command twice.
        self._last: dict[str, int] = {}

    def issue(self, worker_id: str, slot_id: str, command: AdaptationCommand) -> JournalEntry:
        """Number `command` for `worker_id` and commit it; only then may it be sent."""
        (entry,) = self.issue_many([(worker_id, slot_id, command)])
        return entry

    def issue_many(
        self, commands: Sequence[tuple[str, str, AdaptationCommand]]
    ) -> list[JournalEntry]:
        """Number and commit (worker_id, slot_id, command)s in one transaction, in order.

        `issue_batch` for commands held as objects: each is encoded unnumbered first.
        """
        workers, slots, ids, payloads = [], [], [], []
        for worker_id, slot_id, command in commands:
            workers.append(worker_id)
            slots.append(slot_id)
            ids.append(command.command_id)
            payloads.append(encode(msgspec.structs.replace(command, sequence=0)))
        return self.issue_batch(workers, slots, ids, payloads)

    def issue_batch(
        self,
        worker_ids: Sequence[str],
        slot_ids: Sequence[str],
        command_ids: Sequence[str],
        payloads: Sequence[bytes],
    ) -> list[JournalEntry]:
        """Number and commit a batch of encoded, unnumbered commands in one transaction.

        Columns, one entry per command: the worker and slot it goes to, its id and its bytes
        (sequence 0, as `CommandEncoder` writes them). Each worker's commands get its next
        sequences in the order given. Nothing of the batch is committed if any row fails;
        only after this returns may they be sent.
        """
        if not payloads:
            return []
        now = time.time_ns()
        last = self._last
        taken: dict[str, int] = {}  # adopted only once the transaction has committed
        sequences = []
        for worker_id in worker_ids:
            sequence = taken.get(worker_id)
            if sequence is None:
                sequence = last.get(worker_id)
                if sequence is None:
                    sequence = self._last_sequence(worker_id)
            taken[worker_id] = sequence = sequence + 1
            sequences.append(sequence)
        blobs = list(map(numbered, payloads, sequences))
        now_column = [now] * len(blobs)
        columns = (worker_ids, sequences, command_ids, slot_ids, blobs, now_column)
        with self._db:  # commits at the end, rolls back on an error
            # The connection autocommits each statement; one explicit transaction makes the
            # batch one commit (one fsync) and all-or-nothing.
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany(_INSERT, zip(*columns, strict=True))
        last.update(taken)
        return list(map(JournalEntry, worker_ids, slot_ids, command_ids, sequences, blobs,
                        now_column))  # fmt: skip

    def acknowledge(self, command_id: str, outcome: AckOutcome) -> bool:
        """Record the first acknowledgement of a command; False if unknown or already acked."""
        with self._db:
            cursor = self._db.execute(
                "UPDATE commands SET outcome = ?, acked_ns = ? "
                "WHERE command_id = ? AND outcome IS NULL",
                (outcome.name, time.time_ns(), command_id),
            )
        return cursor.rowcount == 1

    def settle_unapplied(self, command_ids: Sequence[str]) -> int:
        """Record commands a worker finished its run without applying (its farewell named
        an earlier sequence) as `UNAPPLIED`, unless already settled; how many were."""
        now = time.time_ns()
        with self._db:
            cursor = self._db.executemany(
                "UPDATE commands SET outcome = ?, acked_ns = ? "
                "WHERE command_id = ? AND outcome IS NULL",
                [(UNAPPLIED, now, command_id) for command_id in command_ids],
            )
        return cursor.rowcount

    def unacked(self, worker_id: str | None = None, after: int = 0) -> list[JournalEntry]:
        """Commands not yet acknowledged (of one worker, past a sequence), in issue order."""
        query = (
            "SELECT worker, slot_id, command_id, sequence, payload, issued_ns FROM commands"
            " WHERE outcome IS NULL"
        )
        params: tuple[object, ...] = ()
        if worker_id is not None:
            query += " AND worker = ? AND sequence > ?"
            params = (worker_id, after)
        query += " ORDER BY worker, sequence"
        return [JournalEntry(*row) for row in self._db.execute(query, params)]

    def settled(self, worker_id: str, after: int) -> list[JournalEntry]:
        """Acknowledged commands of one worker past a sequence, in order.

        A worker does not checkpoint a state query on its own, so after a crash its hello may
        name a sequence below one it had acknowledged; these it must be sent again.
        """
        rows = self._db.execute(
            "SELECT worker, slot_id, command_id, sequence, payload, issued_ns FROM commands"
            " WHERE outcome IS NOT NULL AND worker = ? AND sequence > ? ORDER BY sequence",
            (worker_id, after),
        )
        return [JournalEntry(*row) for row in rows]

    def entries(self) -> list[tuple[str, int, str, str | None]]:
        """(worker, sequence, command_id, outcome) of every command, in order: for checkers."""
        rows = self._db.execute(
            "SELECT worker, sequence, command_id, outcome FROM commands ORDER BY worker, sequence"
        )
        return [(w, s, c, o) for w, s, c, o in rows]

    def _last_sequence(self, worker_id: str) -> int:
        (last,) = self._db.execute(
            "SELECT COALESCE(MAX(sequence), 0) FROM commands WHERE worker = ?", (worker_id,)
        ).fetchone()
        return int(last)

    def close(self) -> None:
        self._db.close()
