"""How a message from the bus becomes a row: the record the sink stores, and its columns."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import msgspec

from leyline import (
    AdaptationCommand,
    CommandAck,
    FieldReport,
    SeedStateReport,
    SeedTelemetry,
    Severity,
    TelemetryEvent,
    TelemetryEventType,
    WorkerHello,
)

#: The contracts the sink stores.
StorableMessage = (
    TelemetryEvent
    | AdaptationCommand
    | CommandAck
    | WorkerHello
    | FieldReport
    | SeedStateReport
    | SeedTelemetry
)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_JSON = msgspec.json.Encoder()


class StoredMessage(msgspec.Struct, frozen=True):
    """One decoded message with the header fields that place it: what the wiring hands in.

    `sequence` counts per (sender, topic) and starts over with each `incarnation` (a sender
    restart), as the bus header does.
    """

    channel: str
    sender: str
    sequence: int
    sent_ns: int
    topic: str
    message: StorableMessage
    incarnation: int = 0


def to_ns(moment: datetime) -> int:
    """Nanoseconds since the Unix epoch, exact (a naive time is taken as UTC)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1_000


def from_ns(ns: int) -> datetime:
    """The UTC time `ns` nanoseconds after the Unix epoch (to the microsecond)."""
    return _EPOCH + timedelta(microseconds=ns // 1_000)


def scope_of(topic: str) -> str:
    """The scope of a `<channel>.<scope>.` topic: the worker a command is addressed to."""
    _, _, rest = topic.partition(".")
    return rest.removesuffix(".")


def _placement(record: StoredMessage) -> tuple[object, ...]:
    """The columns that place a message on the bus (`_PLACE`), first in every message table."""
    return (
        record.sender,
        record.channel,
        record.topic,
        record.incarnation,
        record.sequence,
        record.sent_ns,
    )


# Enum `.name` is a descriptor call; a dict lookup is a fifth of it, and events are the bulk.
_EVENT_TYPES = {member: member.name for member in TelemetryEventType}
_SEVERITIES = {member: member.name.lower() for member in Severity}


def event_row(
    record: StoredMessage, event: TelemetryEvent, illegal: str | None = None
) -> tuple[object, ...]:
    """The `events` columns, in INSERT order; `illegal` says why a stage change was refused.

    The seed is the event's own, else the one its payload names.
    """
    return (
        record.sender,
        record.channel,
        record.topic,
        record.incarnation,
        record.sequence,
        record.sent_ns,
        _EVENT_TYPES[event.event_type],
        event.seed_id or getattr(event.payload, "seed_id", None),
        event.slot_id,
        event.epoch,
        _SEVERITIES[event.severity],
        illegal,
        _JSON.encode(event).decode(),
    )


def command_row(record: StoredMessage, command: AdaptationCommand) -> tuple[object, ...]:
    """The `commands` columns; the worker is the scope of the topic it was sent on."""
    return (
        *_placement(record),
        scope_of(record.topic),
        command.command_id,
        command.command_type.name,
        to_ns(command.timestamp),
        command.target_seed_id,
        command.target_slot_id,
        _JSON.encode(command).decode(),
    )


def ack_row(record: StoredMessage, ack: CommandAck) -> tuple[object, ...]:
    """The `acks` columns."""
    return (
        *_placement(record),
        ack.worker_id,
        ack.command_id,
        ack.command_type.name,
        ack.outcome.name,
        ack.reason,
        ack.stage_after.name if ack.stage_after is not None else None,
        _JSON.encode(ack).decode(),
    )


def hello_row(record: StoredMessage, hello: WorkerHello) -> tuple[object, ...]:
    """The `hellos` columns."""
    return (
        *_placement(record),
        hello.worker_id,
        hello.last_applied_sequence,
        _JSON.encode(hello).decode(),
    )


def field_report_row(record: StoredMessage, report: FieldReport) -> tuple[object, ...]:
    """The `field_reports` columns."""
    return (
        *_placement(record),
        report.report_id,
        report.seed_id,
        report.slot_id,
        report.blueprint_id,
        report.final_stage.name,
        int(report.success),
        _JSON.encode(report).decode(),
    )


def seed_report_row(record: StoredMessage, report: SeedStateReport) -> tuple[object, ...]:
    """The `seed_reports` columns."""
    return (
        *_placement(record),
        report.seed_id,
        report.slot_id,
        report.stage.name,
        _JSON.encode(report).decode(),
    )


def seed_telemetry_row(record: StoredMessage, telemetry: SeedTelemetry) -> tuple[object, ...]:
    """The `seed_telemetry` columns."""
    return (
        *_placement(record),
        telemetry.seed_id,
        telemetry.layer_id,
        telemetry.epoch,
        telemetry.stage.name,
        telemetry.alpha,
        telemetry.accuracy,
        telemetry.accuracy_delta,
        telemetry.gradient_norm,
        telemetry.gradient_health,
        _JSON.encode(telemetry).decode(),
    )


#: The columns that place a message on the bus, first in every message table.
_PLACE = ("sender", "channel", "topic", "incarnation", "sequence", "sent_ns")


def _insert(table: str, *columns: str) -> str:
    """An INSERT that skips a message already stored (the key is in the schema)."""
    names = (*_PLACE, *columns)
    marks = ", ".join("?" * len(names))
    return f"INSERT OR IGNORE INTO {table} ({', '.join(names)}) VALUES ({marks})"


INSERT_EVENT = _insert(
    "events", "event_type", "seed_id", "slot_id", "epoch", "severity", "illegal", "message"
)
INSERT_COMMAND = _insert(
    "commands", "worker", "command_id", "command_type", "issued_ns", "seed_id", "slot_id", "message"
)
INSERT_ACK = _insert(
    "acks", "worker", "command_id", "command_type", "outcome", "reason", "stage_after", "message"
)
INSERT_HELLO = _insert("hellos", "worker", "last_applied_sequence", "message")
INSERT_FIELD_REPORT = _insert(
    "field_reports",
    "report_id",
    "seed_id",
    "slot_id",
    "blueprint_id",
    "final_stage",
    "success",
    "message",
)
INSERT_SEED_REPORT = _insert("seed_reports", "seed_id", "slot_id", "stage", "message")
INSERT_SEED_TELEMETRY = _insert(
    "seed_telemetry",
    "seed_id",
    "layer_id",
    "epoch",
    "stage",
    "alpha",
    "accuracy",
    "accuracy_delta",
    "gradient_norm",
    "gradient_health",
    "message",
)
