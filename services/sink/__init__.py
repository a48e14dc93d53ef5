"""The telemetry sink's storage and queries: a SQLite record of what happened on the bus."""

from services.sink.losses import LossReason
from services.sink.queries import DEFAULT_LIMIT, EventRow, event_type_named, query_events
from services.sink.render import (
    aligned_table,
    events_as_json_lines,
    events_as_table,
    report_as_text,
)
from services.sink.report import RunReport, WorkerSummary, build_report
from services.sink.rows import StorableMessage, StoredMessage
from services.sink.schema import SCHEMA_VERSION, StoreError
from services.sink.store import DEFAULT_PATH, BatchResult, TelemetryStore

__all__ = [
    "DEFAULT_LIMIT",
    "DEFAULT_PATH",
    "SCHEMA_VERSION",
    "BatchResult",
    "EventRow",
    "LossReason",
    "RunReport",
    "StorableMessage",
    "StoreError",
    "StoredMessage",
    "TelemetryStore",
    "WorkerSummary",
    "aligned_table",
    "build_report",
    "event_type_named",
    "events_as_json_lines",
    "events_as_table",
    "query_events",
    "report_as_text",
]
