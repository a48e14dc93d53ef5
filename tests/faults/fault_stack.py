"""The harness a fault test drives: start the stack, wait for progress, break it, judge it."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from services.chaos import (
    ChaosSettings,
    FaultInjector,
    MemoryWatch,
    RunFiles,
    Verdict,
    build_stack,
    judge,
)
from services.chaos.checker import last_applied
from services.chaos.run import settle_and_stop, workers_training
from services.controller.journal import CommandJournal

START_TIMEOUT_S = 120.0


class FaultHarness:
    """One chaos stack in `data_dir`, with its injector; `finish()` stops it and checks it."""

    def __init__(
        self,
        data_dir: Path,
        settings: ChaosSettings,
        extra_env: dict[str, dict[str, str]] | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.settings = settings
        self.stack = build_stack(settings, data_dir, extra_env)
        self.injector = FaultInjector(self.stack, MemoryWatch())
        self.journal = data_dir / "controller-journal.db"

    def start(self, names: list[str] | None = None) -> None:
        self.stack.start(names)

    def wait_training(self) -> None:
        assert self.injector.wait_until(workers_training(self.stack), START_TIMEOUT_S), (
            "workers never checkpointed an epoch"
        )

    def applied(self, worker: str) -> int:
        """The last command sequence `worker`'s checkpoint says it applied."""
        return last_applied(self.data_dir / "checkpoints", worker)

    def wait_applied(self, worker: str, count: int, timeout_s: float = 60.0) -> None:
        """Until `worker`'s checkpoint says it applied `count` commands."""
        assert self.injector.wait_until(lambda: self.applied(worker) >= count, timeout_s), (
            f"{worker} applied only {self.applied(worker)} of {count} commands"
        )

    def wait_more_applied(self, worker: str, more: int) -> None:
        """Until `worker` applied `more` commands beyond what its checkpoint says now."""
        self.wait_applied(worker, self.applied(worker) + more)

    def wait_epoch_started(self, worker: str) -> None:
        """Until `worker` checkpoints its next epoch, then a moment more: it is mid-epoch."""
        checkpoint = self.data_dir / "checkpoints" / f"{worker}.pt"
        before = checkpoint.stat().st_mtime_ns
        assert self.injector.wait_until(lambda: checkpoint.stat().st_mtime_ns != before, 30.0)
        self.injector.wait(0.2)

    def journaled(self, worker: str) -> int:
        journal = CommandJournal(self.journal)
        try:
            return sum(1 for w, *_ in journal.entries() if w == worker)
        finally:
            journal.close()

    def finish(self) -> Verdict:
        """Settle, stop cleanly, and return the checker's verdict (memory bound included)."""
        files = RunFiles.of(self.data_dir, self.settings.replay_window)
        settle_and_stop(self.injector, self.settings, files)
        verdict, _ = judge(self.injector, self.settings, self.data_dir)
        return verdict

    def query(self, sql: str, *params: object) -> list[tuple[object, ...]]:
        """Rows from the sink's database (read-only)."""
        uri = f"{(self.data_dir / 'sink.db').resolve().as_uri()}?mode=ro"
        with sqlite3.connect(uri, uri=True) as db:
            return db.execute(sql, params).fetchall()

    def incarnations(self, sender: str) -> int:
        """How many incarnations of `sender` the sink stored telemetry from."""
        rows = self.query(
            "SELECT COUNT(DISTINCT incarnation) FROM events WHERE sender = ? AND channel = 'tel'",
            sender,
        )
        return int(rows[0][0])  # type: ignore[call-overload]

    def close(self) -> None:
        self.stack.stop()

    def log_tails(self, lines: int = 30) -> str:
        tails = []
        for log in sorted((self.data_dir / "logs").glob("*.log")):
            text = log.read_text(errors="replace").splitlines()[-lines:]
            tails.append(f"--- {log.name}\n" + "\n".join(text))
        return "\n".join(tails)
