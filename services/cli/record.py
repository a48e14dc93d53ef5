"""`leyline record OUT.mcap`: every channel of a live run into an MCAP file."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from services.cli._tool import add_bus_flags, bus_of, stop_on_signals


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser("record", help="record a live run's bus into an MCAP file")
    parser.add_argument("out", type=Path, help="the .mcap file to write")
    parser.add_argument(
        "--duration", type=float, help="seconds to record (default: until interrupted)"
    )
    add_bus_flags(parser)
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    try:
        from services.observer.recorder import Recorder
        from services.observer.recording import RecordingWriter
    except ImportError as error:
        print(f"leyline record: {error}: pip install 'esper-leyline[record]'", file=sys.stderr)
        return 2
    from services.observer.listener import listen, open_listener

    subscriber = open_listener(bus_of(args), args.id)
    recorder = Recorder(subscriber, RecordingWriter(args.out))
    print(f"leyline record: recording into {args.out}; Ctrl-C stops", flush=True)
    try:
        listen(subscriber, args.duration, stop_on_signals(), recorder.tick)
    finally:
        summary = recorder.close()
        subscriber.close()
    print(
        f"leyline record: {summary['messages']} messages in {args.out}; gaps seen "
        f"{summary['gaps']} ({summary['missing']} missing), replays asked "
        f"{summary['repairs_asked']}, rejected {summary['rejected']}",
        flush=True,
    )
    return 0
