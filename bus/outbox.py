"""A replay window that outlives its process: recent messages kept in SQLite.

An in-memory window dies with a killed publisher, and with it every message the subscribers
had not yet received (a sink that was down at the time, say): a silent loss. With a durable
window the restarted publisher still answers replay requests for its earlier incarnations,
and announces how far each of them got, so nothing it ever sent can go missing unnoticed.
Each message is committed before it is sent (WAL: a killed process loses nothing committed).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    incarnation INTEGER NOT NULL,
    topic BLOB NOT NULL,
    sequence INTEGER NOT NULL,
    header BLOB NOT NULL,
    payload BLOB NOT NULL,
    PRIMARY KEY (incarnation, topic, sequence)
) WITHOUT ROWID;
"""


class DurableWindow:
    """The last `size` messages of each topic, for this and the `keep - 1` earlier incarnations."""

    def __init__(self, path: str | Path, size: int, incarnation: int, keep: int = 4) -> None:
        self.size = size
        self.incarnation = incarnation
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        # The publisher's thread answers replays from it, always under the publisher's lock.
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        kept = [
            row[0]
            for row in self._db.execute(
                "SELECT DISTINCT incarnation FROM messages ORDER BY incarnation DESC"
            )
        ]
        for old in kept[keep - 1 :]:
            self._db.execute("DELETE FROM messages WHERE incarnation = ?", (old,))
        #: How far each earlier incarnation got: {incarnation: {topic: last sequence}}.
        self.earlier: dict[int, dict[str, int]] = {}
        for old, topic, last in self._db.execute(
            "SELECT incarnation, topic, MAX(sequence) FROM messages GROUP BY incarnation, topic"
        ):
            if old != incarnation:
                self.earlier.setdefault(old, {})[bytes(topic).decode()] = last

    def record(self, topic: bytes, sequence: int, header: bytes, payload: bytes) -> None:
        """Commit one message before it is sent; trim its topic to the window now and then."""
        self._db.execute(
            "INSERT OR REPLACE INTO messages VALUES (?, ?, ?, ?, ?)",
            (self.incarnation, topic, sequence, header, payload),
        )
        if sequence % 256 == 0:
            self._db.execute(
                "DELETE FROM messages WHERE incarnation = ? AND topic = ? AND sequence <= ?",
                (self.incarnation, topic, sequence - self.size),
            )

    def between(
        self, topic: bytes, incarnation: int, first: int, last: int
    ) -> list[tuple[int, bytes, bytes]]:
        """The kept messages of one topic and incarnation in `first`..`last`, in order."""
        rows = self._db.execute(
            "SELECT sequence, header, payload FROM messages WHERE incarnation = ? AND topic = ?"
            " AND sequence BETWEEN ? AND ? ORDER BY sequence",
            (incarnation, topic, max(first, self._floor(topic, incarnation)), last),
        )
        return [(sequence, bytes(header), bytes(payload)) for sequence, header, payload in rows]

    def oldest(self, topic: bytes, incarnation: int) -> int:
        """The oldest sequence kept of one topic and incarnation; 0 when none is."""
        (lowest,) = self._db.execute(
            "SELECT MIN(sequence) FROM messages WHERE incarnation = ? AND topic = ?"
            " AND sequence > ?",
            (incarnation, topic, self._floor(topic, incarnation) - 1),
        ).fetchone()
        return int(lowest or 0)

    def close(self) -> None:
        self._db.close()

    def _floor(self, topic: bytes, incarnation: int) -> int:
        """The first sequence inside the window (rows below it await the next trim)."""
        (highest,) = self._db.execute(
            "SELECT MAX(sequence) FROM messages WHERE incarnation = ? AND topic = ?",
            (incarnation, topic),
        ).fetchone()
        return max(1, int(highest or 0) - self.size + 1)
