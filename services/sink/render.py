"""Stored telemetry as text: JSON lines for machines, aligned tables for people."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

import msgspec

from services.sink.queries import EventRow
from services.sink.report import RunReport

_EVENT_HEADER = (
    "sent at", "sender", "seq", "event", "seed", "slot", "epoch", "severity", "illegal",
)  # fmt: skip
_REPORT_HEADER = (
    "worker", "epochs", "acc start", "acc end", "germinated", "fossilized", "culled",
    "commands", "applied", "rejected", "gaps", "lost", "illegal",
)  # fmt: skip


def aligned_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """Columns padded to their widest cell, two spaces apart."""
    body = [list(header), *(list(row) for row in rows)]
    widths = [max(len(row[i]) for row in body) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in body
    )


def events_as_json_lines(rows: Iterable[EventRow]) -> Iterator[str]:
    """One JSON object per event, the stored message embedded as it was received."""
    encoder = msgspec.json.Encoder()
    for row in rows:
        yield encoder.encode(row).decode()


def events_as_table(rows: Iterable[EventRow]) -> str:
    return aligned_table(
        _EVENT_HEADER,
        (
            (
                row.sent_at.isoformat(timespec="milliseconds"),
                row.sender,
                str(row.sequence),
                row.event_type,
                row.seed_id or "-",
                row.slot_id or "-",
                "-" if row.epoch is None else str(row.epoch),
                row.severity,
                row.illegal or "",
            )
            for row in rows
        ),
    )


def report_as_text(report: RunReport) -> str:
    """The per-worker table, then the rejection reasons, then the totals."""
    table = aligned_table(
        _REPORT_HEADER,
        (
            (
                w.worker,
                str(w.epochs),
                _percent(w.accuracy_start),
                _percent(w.accuracy_end),
                str(w.seeds_germinated),
                str(w.seeds_fossilized),
                str(w.seeds_culled),
                str(w.commands_issued),
                str(w.commands_applied),
                str(w.commands_rejected),
                str(w.gaps),
                str(w.messages_lost),
                str(w.illegal_stage_changes),
            )
            for w in report.workers
        ),
    )
    reasons = [
        (w.worker, reason, str(count))
        for w in report.workers
        for reason, count in w.rejections_by_reason.items()
    ]
    parts = [table]
    if reasons:
        parts.append(aligned_table(("worker", "rejection reason", "count"), reasons))
    parts.append(
        f"stored: {report.events} events, {report.commands} commands, {report.acks} acks, "
        f"{report.field_reports} field reports"
    )
    return "\n\n".join(parts)


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}%"
