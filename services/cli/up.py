"""`leyline up`: the whole local stack, live progress, then the run's report."""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path
from typing import Any

import msgspec

from services.config import StackConfig, add_config_file_flag, add_config_flags, config_from_args
from services.progress import WorkerProgress
from services.sink import TelemetryStore, build_report, report_as_text
from services.stack import Stack, StackModel, archive_previous_run, plan_stack


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "up", help="run the sink, the controller and N workers on this machine"
    )
    add_config_file_flag(parser)
    add_config_flags(parser, StackConfig, "stack")
    parser.add_argument("--json", action="store_true", help="print the report as one JSON object")
    parser.set_defaults(handler=_run)


class ProgressPrinter:
    """Prints a worker's line whenever its epoch or seed stages change."""

    def __init__(self, total_epochs: int) -> None:
        self._total = total_epochs
        self._shown: dict[str, WorkerProgress] = {}

    def __call__(self, progress: list[WorkerProgress]) -> None:
        for worker in progress:
            if self._shown.get(worker.worker) != worker:
                self._shown[worker.worker] = worker
                print(worker.line(self._total), flush=True)


def _check_policy(config: StackConfig) -> None:
    """Load the controller's policy here first: a bad one is one line now, not a controller
    that dies and is restarted while the workers wait. The heuristic cannot be bad."""
    if config.policy != "heuristic":
        from services.controller.loading import load_policy  # torch: only when needed

        load_policy(config.policy, config.topology, config.checkpoint)


def _run(args: argparse.Namespace) -> int:
    config = config_from_args(StackConfig, "stack", args)
    _check_policy(config)
    if not config.resume and (archive := archive_previous_run(config.data_dir)):
        print(f"leyline up: the previous run's files are now in {archive}", flush=True)
    if config.insecure:
        print(
            "leyline up: WARNING: --insecure: plaintext links, every peer is believed",
            file=sys.stderr,
            flush=True,
        )
    model = StackModel(topology=config.topology, policy=config.policy, checkpoint=config.checkpoint)
    plan = plan_stack(
        config.workers, config.epochs, config.data_dir, insecure=config.insecure, model=model
    )
    if plan.created_keys:
        keys = Path(config.data_dir) / "keys"
        print(f"leyline up: created CURVE keys for {', '.join(plan.created_keys)} in {keys}")
    stack = Stack(plan)
    interrupted = False

    def interrupt(*_: object) -> None:
        nonlocal interrupted
        interrupted = True
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    print(
        f"leyline up: sink, controller ({config.policy}) and {config.workers} "
        f"{config.topology} workers, {config.epochs} epochs; "
        f"data and logs in {Path(config.data_dir).resolve()}",
        flush=True,
    )
    stack.start()
    ok = False
    failed: list[str] = []
    try:
        ok = stack.wait_workers(ProgressPrinter(config.epochs))
        failed = stack.failed_early()
    except KeyboardInterrupt:
        interrupted = True
        print("\nleyline up: interrupted, shutting down", flush=True)
    finally:
        stack.stop()
    if failed:
        logs = Path(plan.data_dir) / "logs"
        print(f"leyline up: {', '.join(failed)} exited early; see {logs}", file=sys.stderr)
    if plan.sink_db.is_file():
        with TelemetryStore(plan.sink_db, create=False) as store:
            report = build_report(store)
        if args.json:
            print(msgspec.json.encode(report).decode())
        else:
            print(report_as_text(report))
    if interrupted:
        return 130
    return 0 if ok else 1
