"""Services as child processes that are always stopped, their logs, and their sink read-only.

Waits are deadlines over polled conditions, never fixed sleeps as synchronisation.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any, TypeVar

import pytest

from services.config import ENV_PREFIX

ROOT = Path(__file__).resolve().parents[2]
#: What the image's `leyline` entrypoint runs, with this interpreter.
ENTRYPOINT = (sys.executable, "-m", "services.cli")
LOG_TAIL_LINES = 30

T = TypeVar("T")


def service_env(settings: Mapping[str, str]) -> dict[str, str]:
    """This environment less its own LEYLINE_* variables, then `settings`: only tests configure."""
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
    return {**inherited, **settings}


def log_tails(logs: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last `lines` lines of every `*.log` under `logs`, each under its file name."""
    parts = []
    for log in sorted(logs.glob("*.log")):
        tail = log.read_text(errors="replace").splitlines()[-lines:]
        parts.append(f"--- {log.name} (last {len(tail)} lines) ---\n" + "\n".join(tail))
    return "\n".join(parts) or f"(no logs in {logs})"


def stop_process(process: subprocess.Popen[bytes], timeout_s: float = 10.0) -> int:
    """SIGTERM, then SIGKILL if it has not exited within `timeout_s`; returns the exit code."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


def wait_until(
    found: Callable[[], T | None],
    timeout_s: float,
    what: str,
    *,
    pause: Callable[[], None] = lambda: time.sleep(0.1),
    context: Callable[[], str] = lambda: "",
) -> T:
    """Call `found`, then `pause`, until it returns something other than None, or fail naming
    `what` (and `context()`, such as the service logs) once `timeout_s` has passed."""
    deadline = time.monotonic() + timeout_s
    while (value := found()) is None:
        if time.monotonic() >= deadline:
            pytest.fail(f"gave up after {timeout_s:g} s waiting for {what}\n{context()}")
        pause()
    return value


def read_only(db: Path) -> sqlite3.Connection:
    """A read-only connection to a sink database another process is writing (WAL)."""
    return sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True, timeout=5.0)


def query(db: Path, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
    """All rows of one read-only query, the connection closed after."""
    connection = read_only(db)
    try:
        return connection.execute(sql, params).fetchall()
    finally:
        connection.close()


class ServiceProcesses:
    """The `leyline` services one fixture started, each logging to `logs/<name>.log`."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self._files: list[IO[bytes]] = []
        logs.mkdir(parents=True, exist_ok=True)

    def start(
        self, name: str, argv: Sequence[str], settings: Mapping[str, str]
    ) -> subprocess.Popen[bytes]:
        log = (self.logs / f"{name}.log").open("wb")
        self._files.append(log)
        process = subprocess.Popen(
            list(argv), cwd=ROOT, env=service_env(settings), stdout=log, stderr=subprocess.STDOUT
        )
        self.processes[name] = process
        return process

    def start_service(self, name: str, command: str, settings: Mapping[str, str]) -> None:
        """`leyline <command>` as the process `name`."""
        self.start(name, [*ENTRYPOINT, command], settings)

    def stop(self, *names: str, timeout_s: float = 10.0) -> dict[str, int]:
        """Stop `names` in order (default: all, last started first); their exit codes."""
        order = names or tuple(reversed(self.processes))
        return {name: stop_process(self.processes[name], timeout_s) for name in order}

    def close(self) -> None:
        self.stop()
        for file in self._files:
            file.close()

    def log_tails(self) -> str:
        return log_tails(self.logs)
