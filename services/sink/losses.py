"""Loss rows: runs of sequences known missing, kept equal to what the store really lacks.

A loss row is written when a gap could not be refilled; a message of that run may still
arrive later (a slow replay, a resend). Every stored message is taken out of the runs that
cover it in the same transaction, so `losses` never counts a message the store holds.
Arithmetic on runs is Python's: sequences go up to 2**63 - 1, and their sums go past it.
"""

from __future__ import annotations

import enum
import sqlite3
from collections.abc import Iterable, Sequence
from typing import Protocol

Run = tuple[int, int]  # first, last: inclusive


class LossReason(enum.StrEnum):
    """Why a run was recorded lost; the value (its name in lower case) is what is stored."""

    BEYOND_WINDOW = "beyond_window"
    REPLAY_TIMEOUT = "replay_timeout"
    REPLAY_INCOMPLETE = "replay_incomplete"
    NO_REPLAY_ENDPOINT = "no_replay_endpoint"
    REPAIR_BACKLOG = "repair_backlog"


def subtract(run: Run, present: Sequence[int]) -> list[Run]:
    """The parts of `run` not in `present` (ascending sequences)."""
    first, last = run
    parts: list[Run] = []
    for sequence in present:
        if sequence < first:
            continue
        if sequence > last:
            break
        if sequence > first:
            parts.append((first, sequence - 1))
        first = sequence + 1
    if first <= last:
        parts.append((first, last))
    return parts


def without(runs: Iterable[Run], covered: Iterable[Run]) -> list[Run]:
    """`runs` less every run in `covered` (both disjoint and ascending)."""
    remaining = list(runs)
    for cut_first, cut_last in covered:
        kept: list[Run] = []
        for first, last in remaining:
            if last < cut_first or first > cut_last:
                kept.append((first, last))
                continue
            if first < cut_first:
                kept.append((first, cut_first - 1))
            if last > cut_last:
                kept.append((cut_last + 1, last))
        remaining = kept
    return remaining


def merged(runs: Iterable[Run]) -> list[Run]:
    """Overlapping or adjacent runs joined: each result is one gap."""
    gaps: list[Run] = []
    for first, last in sorted(runs):
        if gaps and first <= gaps[-1][1] + 1:
            gaps[-1] = (gaps[-1][0], max(gaps[-1][1], last))
        else:
            gaps.append((first, last))
    return gaps


_INSERT = (
    "INSERT OR IGNORE INTO losses (sender, channel, topic, incarnation, first_missing_sequence,"
    " last_missing_sequence, recorded_at_ns, reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
_COVERING = (
    "SELECT id, channel, first_missing_sequence, last_missing_sequence, recorded_at_ns, reason"
    " FROM losses WHERE sender = ? AND topic = ? AND incarnation = ?"
    " AND first_missing_sequence <= ? AND last_missing_sequence >= ?"
    " ORDER BY first_missing_sequence"
)
_ANY = "SELECT EXISTS (SELECT 1 FROM losses)"

Stream = tuple[str, str, int]  # sender, topic, incarnation


class Placed(Protocol):
    """What places a stored message in its stream."""

    @property
    def sender(self) -> str: ...
    @property
    def topic(self) -> str: ...
    @property
    def incarnation(self) -> int: ...
    @property
    def sequence(self) -> int: ...


def recorded(connection: sqlite3.Connection, stream: Stream, first: int, last: int) -> list[Run]:
    """The runs of `stream`'s loss rows that touch `first`..`last`, ascending."""
    rows = connection.execute(_COVERING, (*stream, last, first))
    return [(row[2], row[3]) for row in rows]


def insert(
    connection: sqlite3.Connection,
    stream: Stream,
    channel: str,
    runs: list[Run],
    at_ns: int,
    reason: LossReason,
) -> int:
    """Write one loss row per run; how many sequences they hold."""
    sender, topic, incarnation = stream
    connection.executemany(
        _INSERT,
        [(sender, channel, topic, incarnation, first, last, at_ns, reason) for first, last in runs],
    )
    return sum(last - first + 1 for first, last in runs)


def reconcile(connection: sqlite3.Connection, stored: Iterable[Placed]) -> int:
    """Take the `stored` messages out of the loss rows that count them missing.

    A row shrinks, splits or goes; the rest keeps its reason and time. Returns how many
    sequences were found again. Costs one cheap query when no loss is recorded.
    """
    if not connection.execute(_ANY).fetchone()[0]:
        return 0
    streams: dict[Stream, list[int]] = {}
    for record in stored:
        stream = (record.sender, record.topic, record.incarnation)
        streams.setdefault(stream, []).append(record.sequence)
    found = 0
    for stream, sequences in streams.items():
        sequences.sort()
        rows = connection.execute(_COVERING, (*stream, sequences[-1], sequences[0])).fetchall()
        for row_id, channel, first, last, at_ns, reason in rows:
            parts = subtract((first, last), sequences)
            if parts == [(first, last)]:
                continue
            connection.execute("DELETE FROM losses WHERE id = ?", (row_id,))
            kept = insert(connection, stream, channel, parts, at_ns, LossReason(reason))
            found += last - first + 1 - kept
    return found
