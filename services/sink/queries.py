"""Reading stored telemetry back: filtered, typed event rows."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec

from leyline import TelemetryEvent, TelemetryEventType
from leyline.telemetry import TelemetryEventV1, lift_telemetry_v1
from services.sink.rows import from_ns, to_ns
from services.sink.store import TelemetryStore

#: How many rows a query returns unless told otherwise.
DEFAULT_LIMIT = 100
# SQLite integers are 64-bit: bounds past them (year 9999, a huge limit) are clamped to them,
# which selects exactly the same rows.
_INT_MIN, _INT_MAX = -(2**63), 2**63 - 1


class EventRow(msgspec.Struct, frozen=True):
    """One stored event: the columns it is found by, and the message exactly as received."""

    sender: str
    channel: str
    sequence: int
    sent_at: datetime
    event_type: str
    seed_id: str | None
    slot_id: str | None
    epoch: int | None
    severity: str
    illegal: str | None
    message: msgspec.Raw

    def event(self) -> TelemetryEvent:
        """The stored message decoded back into its contract; a v1 row stored before
        TelemetryEvent.v2 is lifted to it."""
        event = msgspec.json.decode(self.message, type=TelemetryEvent | TelemetryEventV1)
        return lift_telemetry_v1(event) if isinstance(event, TelemetryEventV1) else event


def query_events(
    store: TelemetryStore,
    *,
    worker: str | None = None,
    seed: str | None = None,
    event_type: TelemetryEventType | str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int | None = DEFAULT_LIMIT,
) -> list[EventRow]:
    """Events matching every given filter, oldest first: sent in [since, until), at most `limit`."""
    clauses: list[str] = []
    params: list[object] = []
    if worker is not None:
        clauses.append("sender = ?")
        params.append(worker)
    if seed is not None:
        clauses.append("seed_id = ?")
        params.append(seed)
    if event_type is not None:
        clauses.append("event_type = ?")
        params.append(event_type_named(event_type).name)
    if since is not None:
        clauses.append("sent_ns >= ?")
        params.append(_clamped(to_ns(since)))
    if until is not None:
        clauses.append("sent_ns < ?")
        params.append(_clamped(to_ns(until)))
    where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
    params.append(-1 if limit is None else _clamped(limit))
    cursor = store.connection.execute(
        "SELECT sender, channel, sequence, sent_ns, event_type, seed_id, slot_id, epoch,"
        f" severity, illegal, message FROM events {where}"
        " ORDER BY sent_ns, sender, sequence LIMIT ?",
        params,
    )
    return [_event_row(row) for row in cursor]


def _clamped(value: int) -> int:
    return min(max(value, _INT_MIN), _INT_MAX)


def _event_row(row: tuple[Any, ...]) -> EventRow:
    sender, channel, sequence, sent_ns, kind, seed, slot, epoch, severity, illegal, message = row
    return EventRow(
        sender,
        channel,
        sequence,
        from_ns(sent_ns),
        kind,
        seed,
        slot,
        epoch,
        severity,
        illegal,
        msgspec.Raw(message),
    )


def event_type_named(name: TelemetryEventType | str) -> TelemetryEventType:
    """The event type for a member or its name (any case); ValueError naming the choices."""
    if isinstance(name, TelemetryEventType):
        return name
    try:
        return TelemetryEventType[name.upper()]
    except KeyError:
        choices = ", ".join(member.name for member in TelemetryEventType)
        raise ValueError(f"unknown event type {name!r}; one of {choices}") from None
