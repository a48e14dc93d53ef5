"""What the tool subcommands (`topic`, `record`, `play`) share: finding the run's bus."""

from __future__ import annotations

import argparse
import signal
from collections.abc import Callable
from pathlib import Path

import msgspec

from services.observer.endpoints import BUS_MAP_FILE, TOOL_IDENTITY, BusMap, read_bus_map


def add_bus_flags(parser: argparse.ArgumentParser) -> None:
    """`--data-dir` (a run's bus.json) and/or publishers by hand; the key to prove."""
    group = parser.add_argument_group("the run's bus")
    group.add_argument(
        "--data-dir", default="leyline-data", help="the run's folder (its bus.json and keys/)"
    )
    group.add_argument(
        "--connect", action="append", default=[], help="a binding publisher: ID@tcp://HOST:PORT"
    )
    group.add_argument("--keys-dir", help="CURVE key directory (default: DATA_DIR/keys)")
    group.add_argument("--id", default=TOOL_IDENTITY, help="the identity whose key to prove")
    group.add_argument(
        "--insecure", action="store_true", default=None, help="plaintext: an --insecure run"
    )


def bus_of(args: argparse.Namespace) -> BusMap:
    """The run's bus.json with the flags on top; `--connect` alone needs no bus.json."""
    keys_dir = args.keys_dir or str(Path(args.data_dir) / "keys")
    if args.connect and not (Path(args.data_dir) / BUS_MAP_FILE).is_file():
        bus = BusMap(publishers=tuple(args.connect), intakes=(), keys_dir=keys_dir)
    else:
        bus = read_bus_map(args.data_dir)
        if args.connect:
            bus = msgspec.structs.replace(bus, publishers=(*bus.publishers, *args.connect))
        if args.keys_dir:
            bus = msgspec.structs.replace(bus, keys_dir=args.keys_dir)
    if args.insecure:
        bus = msgspec.structs.replace(bus, insecure=True)
    return bus


def stop_on_signals() -> Callable[[], bool]:
    """SIGINT and SIGTERM end the tool's loop (it then writes what it has); the flag's reader."""
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    return lambda: stopping
