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
    report.add_argument(
        "--plot", type=Path, metavar="FILE", help="also draw the run: PNG, or HTML for a .html FILE"
    )
    report.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    try:
        with TelemetryStore(args.db, create=False) as store:
            summary = build_report(store)
            if args.plot is not None and not _plot(store, args.plot):
                return 2
    except StoreError as error:
        print(f"leyline report: error: {error}", file=sys.stderr)
        return 2
    print(msgspec.json.encode(summary).decode() if args.json else report_as_text(summary))
    return 0


def _plot(store: TelemetryStore, path: Path) -> bool:
    """Draw the run into `path`; False, said on stderr, without the extra or a writable file."""
    try:  # matplotlib is an optional extra: imported only when a picture is asked for
        from services.sink.plot import save
    except ModuleNotFoundError as missing:
        print(
            f"leyline report: --plot needs {missing.name}: pip install 'esper-leyline[plot]'",
            file=sys.stderr,
        )
        return False
    from services.sink.timeline import build_timeline

    try:
        save(build_timeline(store), path)
    except OSError as error:
        print(f"leyline report: cannot write {path}: {error}", file=sys.stderr)
        return False
    return True
