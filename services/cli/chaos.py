"""`leyline chaos`: a seeded schedule of kills and pauses (and, over namespace hosts,
partitions) over the stack, then a verdict."""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

from services.chaos import ChaosSettings, Fault, FaultKind, run_chaos, summary
from services.chaos.netns import unavailable
from services.chaos.schedule import LOCAL_KINDS


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "chaos",
        help="kill, pause, partition and restart the stack at random; check delivery guarantees",
    )
    parser.add_argument("--faults", type=int, default=100, help="faults to inject (default 100)")
    parser.add_argument("--workers", type=int, default=2, help="training workers (default 2)")
    parser.add_argument("--seed", type=int, default=0, help="seeds the schedule (default 0)")
    parser.add_argument(
        "--namespaces",
        action="store_true",
        help="run each service on a network-namespace host of its own (root, iproute2); "
        "partitions then join the faults",
    )
    parser.add_argument(
        "--fault",
        action="append",
        choices=[kind.value for kind in FaultKind],
        help="draw only this kind of fault (repeatable; default: every kind the run allows)",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="an empty or new folder for the run's files (default: a new temporary folder)",
    )
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    if args.faults < 1 or args.workers < 1:
        print("leyline chaos: --faults and --workers must be at least 1", file=sys.stderr)
        return 2
    kinds = tuple(FaultKind(kind) for kind in args.fault or ())
    if not kinds:
        kinds = tuple(FaultKind) if args.namespaces else LOCAL_KINDS
    if FaultKind.PARTITION in kinds and not args.namespaces:
        print("leyline chaos: --fault partition needs --namespaces", file=sys.stderr)
        return 2
    if args.namespaces and (reason := unavailable()) is not None:
        print(f"leyline chaos: --namespaces: {reason}", file=sys.stderr)
        return 2
    data_dir: Path = args.data_dir or Path(tempfile.mkdtemp(prefix="leyline-chaos-"))
    if data_dir.exists() and any(data_dir.iterdir()):
        print(f"leyline chaos: {data_dir} is not empty; give a new folder", file=sys.stderr)
        return 2
    settings = ChaosSettings(
        faults=args.faults,
        workers=args.workers,
        seed=args.seed,
        namespaces=args.namespaces,
        kinds=kinds,
    )
    where = "namespace hosts" if settings.namespaces else "this machine"
    print(
        f"leyline chaos: {settings.faults} faults ({', '.join(kinds)}) over sink, controller "
        f"and {settings.workers} workers on {where}, seed {settings.seed}; "
        f"files in {data_dir.resolve()}",
        flush=True,
    )

    def announce(number: int, fault: Fault) -> None:
        print(f"fault {number:>4}/{settings.faults}: {fault}", flush=True)

    result = run_chaos(settings, data_dir, announce)
    print(f"stopped after {result.duration_s:.0f}s; checking", flush=True)
    print(summary(result.verdict))
    peaks = ", ".join(f"{name} {mib:.0f}" for name, mib in result.peak_rss_mib.items())
    print(f"peak RSS (MiB): {peaks}")
    print(result.counts_json(), flush=True)
    return 0 if result.verdict.passed else 1
