"""`leyline report`: the run summary from the sink's database."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import msgspec

from services.sink import DEFAULT_PATH, StoreError, TelemetryStore, build_report, report_as_text


def add_parser(subparsers: Any) -> None:
    report = subparsers.add_parser("report", help="summarise a run from the sink's database")
    report.add_argument("--db", type=Path, default=DEFAULT_PATH, help="sink database file")
    report.add_argument("--json", action="store_true", help="one machine-readable JSON object")
    report.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    try:
        with TelemetryStore(args.db, create=False) as store:
            summary = build_report(store)
    except StoreError as error:
        print(f"leyline report: error: {error}", file=sys.stderr)
        return 2
    print(msgspec.json.encode(summary).decode() if args.json else report_as_text(summary))
    return 0
