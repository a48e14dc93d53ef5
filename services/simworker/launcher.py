"""A run of simulated workers over several processes, their epochs in step across all.

The parent starts one process per `per_process` workers, each told its slice of the ids
through its environment, waits until each says its workers are connected, then tells them
all one start time, so every process's first epoch (and so every later one) falls at the
same instant. Each child writes its results; the parent merges them.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO, Any

import msgspec

from services.config import BusConfig
from services.simworker.config import SimulateConfig
from services.simworker.group import merge_results

#: The line a child prints once connected; the parent answers with the start time.
CONNECTED = "connected"
#: Time between the last child connecting and the first epoch: every child hears the cue.
START_MARGIN_S = 0.5


def environment(section: str, config: msgspec.Struct) -> dict[str, str]:
    """`config` as the LEYLINE_<SECTION>_* variables that load it again (None left out)."""
    out = {}
    for name in config.__struct_fields__:
        value = getattr(config, name)
        if value is None:
            continue
        text = value if isinstance(value, str) else msgspec.json.encode(value).decode()
        out[f"LEYLINE_{section.upper()}_{name.upper()}"] = text
    return out


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


def launch(config: SimulateConfig, bus: BusConfig, log_level: str = "warning") -> dict[str, Any]:
    """Run every slice in its own process, all starting at one time; the merged results."""
    with tempfile.TemporaryDirectory(prefix="leyline-simulate-") as scratch:
        children: list[tuple[subprocess.Popen[str], Path]] = []
        for index, part in enumerate(slices(config)):
            results = Path(scratch) / f"part-{index}.json"
            part = msgspec.structs.replace(part, results=str(results), start_at=None)
            env = {
                **{k: v for k, v in os.environ.items() if not k.startswith("LEYLINE_SIMULATE_")},
                **environment("bus", bus),
                **environment("simulate", part),
            }
            command = [sys.executable, "-m", "services.cli", "simulate", "--await-start"]
            process = subprocess.Popen(
                [*command, "--log-level", log_level],
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            children.append((process, results))
        try:
            for process, _ in children:
                _wait_connected(process, start_wait_s(config.connect_timeout_s))
            start_at = time.time() + START_MARGIN_S
            for process, _ in children:
                assert process.stdin is not None
                process.stdin.write(f"{start_at}\n")
                process.stdin.flush()
            codes = [process.wait() for process, _ in children]
        finally:
            for process, _ in children:
                if process.poll() is None:
                    process.kill()
                    process.wait()
        if any(codes):
            raise RuntimeError(f"simulated worker processes failed: exit codes {codes}")
        merged = merge_results(
            [json.loads(path.read_text(encoding="utf-8")) for _, path in children]
        )
    return merged


def _wait_connected(process: subprocess.Popen[str], timeout_s: float) -> None:
    assert process.stdout is not None
    line = _read_line(process.stdout, timeout_s)
    if not line.startswith(CONNECTED):
        raise RuntimeError(f"a simulated worker process did not connect (said {line!r})")


def _read_line(stream: IO[str], timeout_s: float) -> str:
    ready, _, _ = select.select([stream], [], [], timeout_s)
    return stream.readline().strip() if ready else ""


def start_wait_s(connect_timeout_s: float) -> float:
    """How long the launcher waits for each process to connect, and so how long a connected
    process waits for the start time: the slowest process sets when every one starts."""
    return connect_timeout_s + 600.0


def await_start(poll: Any, timeout_s: float) -> float:
    """Tell the parent we are connected, then wait for its start time, calling `poll(s)`
    meanwhile so the workers keep heartbeating."""
    print(CONNECTED, flush=True)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        ready, _, _ = select.select([sys.stdin], [], [], 0)
        if ready:
            return float(sys.stdin.readline())
        poll(0.05)
    raise RuntimeError("no start time from the launching process")
