"""`leyline events`: list the telemetry events the sink stored, filtered."""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from leyline import TelemetryEventType
from services.sink import (
    DEFAULT_LIMIT,
    DEFAULT_PATH,
    StoreError,
    TelemetryStore,
    events_as_json_lines,
    events_as_table,
    query_events,
)


def add_parser(subparsers: Any) -> None:
    events = subparsers.add_parser("events", help="list stored telemetry events")
    events.add_argument("--db", type=Path, default=DEFAULT_PATH, help="sink database file")
    events.add_argument("--worker", help="only events sent by this worker")
    events.add_argument("--seed", help="only events about this seed")
    events.add_argument(
        "--type",
        dest="event_type",
        type=str.upper,
        choices=[member.name for member in TelemetryEventType],
        metavar="NAME",
        help="only events of this type, e.g. SEED_CULLED",
    )
    events.add_argument("--since", type=_iso_time, help="sent at or after (ISO 8601; UTC if naive)")
    events.add_argument("--until", type=_iso_time, help="sent before (ISO 8601; UTC if naive)")
    events.add_argument(
        "--limit", type=_positive, default=DEFAULT_LIMIT, help="at most N events, oldest first"
    )
    events.add_argument("--format", choices=("table", "json"), default="table")
    events.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    try:
        with TelemetryStore(args.db, create=False) as store:
            rows = query_events(
                store,
                worker=args.worker,
                seed=args.seed,
                event_type=args.event_type,
                since=args.since,
                until=args.until,
                limit=args.limit,
            )
    except StoreError as error:
        print(f"leyline events: error: {error}", file=sys.stderr)
        return 2
    if args.format == "json":
        for line in events_as_json_lines(rows):
            print(line)
    else:
        print(events_as_table(rows))
    return 0


def _iso_time(text: str) -> datetime:
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r}") from None


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"not a positive integer: {text!r}")
    return value
