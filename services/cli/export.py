"""`leyline export`: a stored run in other tools' formats."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from leyline import LeylineError
from services.sink import DEFAULT_PATH, StoreError, TelemetryStore


def add_parser(subparsers: Any) -> None:
    export = subparsers.add_parser("export", help="write a stored run in another tool's format")
    formats = export.add_subparsers(dest="export_format", required=True, metavar="FORMAT")
    tensorboard = formats.add_parser(
        "tensorboard", help="TensorBoard event files, one run folder per worker"
    )
    tensorboard.add_argument("directory", type=Path, metavar="DIR", help="where to write them")
    tensorboard.add_argument("--db", type=Path, default=DEFAULT_PATH, help="sink database file")
    tensorboard.set_defaults(handler=_tensorboard)


def _tensorboard(args: argparse.Namespace) -> int:
    try:  # the tensorboard extra is optional: imported only when this export is asked for
        from services.sink.tensorboard import export_tensorboard
    except ModuleNotFoundError as missing:
        print(
            f"leyline export: tensorboard needs {missing.name}: "
            "pip install 'esper-leyline[tensorboard]'",
            file=sys.stderr,
        )
        return 2
    from services.sink.timeline import build_timeline

    try:
        with TelemetryStore(args.db, create=False) as store:
            timeline = build_timeline(store)
        folders = export_tensorboard(timeline, args.directory)
    except (StoreError, LeylineError, OSError) as error:
        print(f"leyline export: error: {error}", file=sys.stderr)
        return 2
    for folder in folders:
        print(f"wrote {folder}")
    print(f"open with: tensorboard --logdir {args.directory}")
    return 0
