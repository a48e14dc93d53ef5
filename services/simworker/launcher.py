"""A run of simulated workers over several processes, their epochs in step across all.

The parent imports the simulator once and forks one process per `per_process` workers, each
given its slice of the ids, waits until each says its workers are connected, then tells
them all one start time, so every process's first epoch (and so every later one) falls at
the same instant. Each child writes its results; the parent merges them.

Forked, not started afresh: a fresh interpreter per process imports torch and the rest
(about 4 s of CPU each, `import torch._dynamo` included), so at 1,024 workers sixteen
processes spent a minute of both cores on imports while the first ones were already
handshaking with the controller and the sink, which starved all of them (BENCHMARKS.md,
`scale`). Forked children share the parent's imported modules.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import msgspec
import zmq

from bus.security import Curve
from services.cli._service import lift_socket_cap
from services.config import BusConfig
from services.simworker.config import SimulateConfig
from services.simworker.group import merge_results, run_group

#: Time between the last child connecting and the first epoch: every child hears the cue.
START_MARGIN_S = 0.5


def slices(config: SimulateConfig) -> list[SimulateConfig]:
    """The config of each child: consecutive ranges of at most `per_process` workers."""
    out = []
    for offset in range(0, config.workers, config.per_process):
        count = min(config.per_process, config.workers - offset)
        out.append(
            msgspec.structs.replace(
                config, workers=count, first=config.first + offset, per_process=count
            )
        )
    return out


def launch(config: SimulateConfig, bus: BusConfig) -> dict[str, Any]:
    """Run every slice in its own process, all starting at one time; the merged results."""
    warm_up()
    forking = multiprocessing.get_context("fork")
    with tempfile.TemporaryDirectory(prefix="leyline-simulate-") as scratch:
        children: list[tuple[multiprocessing.process.BaseProcess, Connection, Path]] = []
        try:
            for index, part in enumerate(slices(config)):
                results = Path(scratch) / f"part-{index}.json"
                part = msgspec.structs.replace(part, results=str(results), start_at=None)
                ours, theirs = forking.Pipe()
                process = forking.Process(
                    target=_child, args=(part, bus, theirs), name=f"simulate-{part.first}"
                )
                process.start()
                theirs.close()
                children.append((process, ours, results))
            for child, pipe, _ in children:
                _wait_connected(child, pipe, start_wait_s(config.connect_timeout_s))
            start_at = time.time() + START_MARGIN_S
            for _, pipe, _ in children:
                pipe.send(start_at)
            for child, _, _ in children:
                child.join()
            codes = [child.exitcode for child, _, _ in children]
        finally:
            for child, _, _ in children:
                if child.is_alive():
                    child.kill()
                    child.join()
        if any(codes):
            raise RuntimeError(f"simulated worker processes failed: exit codes {codes}")
        merged = merge_results(
            [json.loads(path.read_text(encoding="utf-8")) for _, _, path in children]
        )
    return merged


def warm_up() -> None:
    """Import now what each child would otherwise import for itself: a worker's optimiser
    imports `torch._dynamo` on first construction (1.5 s of CPU). An import, not a tensor
    operation: the parent starts no thread pool that its forked children would inherit."""
    import torch._dynamo  # noqa: F401


def _child(config: SimulateConfig, bus: BusConfig, pipe: Connection) -> None:
    """One process's workers: connect, report, await the start time, run, write results.

    At `config.nice` more niceness than the launcher: the workers share the host with the
    services they drive, which on their own hosts would not compete with them. At the same
    priority, 16 processes building and connecting 1,024 workers took most of the 2-core VM,
    and the controller's I/O thread and ZAP helper, serial and starved of their share, took
    ~3 s to finish the handshakes they finish in 0.1-0.8 s with the simulator niced
    (bench scale, BENCHMARKS.md).
    """
    os.nice(config.nice)
    lift_socket_cap()
    try:
        run_group(
            config,
            bus,
            lambda group: await_start(group.pump, pipe, start_wait_s(config.connect_timeout_s)),
        )
    finally:
        # A forked child exits without running atexit: stop this process's ZAP helper here.
        Curve.stop_handlers(zmq.Context.instance())


def _wait_connected(
    process: multiprocessing.process.BaseProcess, pipe: Connection, timeout_s: float
) -> None:
    try:
        if pipe.poll(timeout_s) and pipe.recv() == "connected":
            return
    except EOFError:
        pass
    raise RuntimeError(f"simulated worker process {process.name} did not connect")


def start_wait_s(connect_timeout_s: float) -> float:
    """How long the launcher waits for each process to connect, and so how long a connected
    process waits for the start time: the slowest process sets when every one starts."""
    return connect_timeout_s + 600.0


def await_start(poll: Any, pipe: Connection, timeout_s: float) -> float:
    """Tell the parent we are connected, then wait for its start time, calling `poll(s)`
    meanwhile so the workers keep heartbeating."""
    pipe.send("connected")
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pipe.poll(0):
            return float(pipe.recv())
        poll(0.05)
    raise RuntimeError("no start time from the launching process")
