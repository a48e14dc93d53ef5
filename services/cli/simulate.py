"""`leyline simulate`: many simulated workers (real bus, real protocol, no training)."""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

from bus.security import Role, ensure_keys
from services.cli._service import add_service_parser, load_service
from services.logging import configure_logging
from services.simworker.config import SimulateConfig
from services.simworker.group import WorkerGroup, run_group, worker_ids
from services.simworker.launcher import await_start, launch, start_wait_s


def add_parser(subparsers: Any) -> None:
    parser = add_service_parser(
        subparsers,
        "simulate",
        "drive a controller and a sink with many simulated workers",
        SimulateConfig,
    )
    parser.add_argument(
        "--await-start",
        action="store_true",
        help="once connected, print 'connected' and read the start time from stdin "
        "(how a launching `leyline simulate` keeps its processes in step)",
    )
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    config, bus = load_service(SimulateConfig, "simulate", args)
    # stdout is the launcher's channel to a child: log lines go to stderr.
    configure_logging(args.log_level, stream=sys.stderr)
    if args.await_start:
        run_group(
            config,
            bus,
            lambda group: await_start(group.pump, start_wait_s(config.connect_timeout_s)),
        )
        return 0
    if not bus.insecure:
        ensure_keys(bus.keys_dir, dict.fromkeys(worker_ids(config), Role.WORKER))
    if config.workers > config.per_process:
        results = launch(config, bus, args.log_level)
        if config.results is not None:
            Path(config.results).write_text(json.dumps(results), encoding="utf-8")
    else:
        results = run_group(config, bus, _start_now)
    print(summary(results))
    return 0


def _start_now(group: WorkerGroup) -> float:
    start_at = group.config.start_at
    return start_at if start_at is not None else 0.0


def summary(results: dict[str, Any]) -> str:
    """One line for people: how many workers, commands, repeats, rejections and the latency."""
    workers = results["workers"]
    latencies = sorted(us for w in workers for us in w["latencies_us"])
    rejected = sum(sum(w["rejections"].values()) for w in workers)
    twice = sum(w["applied_more_than_once"] for w in workers)
    line = (
        f"{len(workers)} simulated workers, {sum(w['epochs'] for w in workers)} epochs, "
        f"{sum(w['commands'] for w in workers)} commands applied "
        f"({twice} more than once), {rejected} bus rejections"
    )
    if latencies:
        p99 = latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))]
        line += (
            f"; signal-to-command latency p50 {statistics.median(latencies) / 1e3:.1f} ms, "
            f"p99 {p99 / 1e3:.1f} ms"
        )
    return line
