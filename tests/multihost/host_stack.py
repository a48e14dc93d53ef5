"""The Leyline stack across namespace hosts: a sink, a controller and workers, one per host.

The plan is `leyline up`'s own (`plan_stack`: ports, files, keys where the stack has them),
with each loopback endpoint moved to the address of the host whose service binds it
(`services.chaos.hosts`, as `leyline chaos --namespaces` does). Each
service is the real `leyline <command>` process, started inside its host with
`ip netns exec` and configured only by LEYLINE_* variables. Nothing sets a replay address, so
each node finds the one its peers reach. Every file lives in one data folder (the hosts share
the file system), laid out as `RunFiles.of` expects, so the delivery checker reads it as is.
"""

from __future__ import annotations

import json
import os
import sqlite3
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import pytest

from bus.security import Role, ensure_keys
from services.chaos.checker import RunFiles, Verdict, check
from services.chaos.hosts import on_hosts
from services.chaos.netns import Host, Network
from services.chaos.run import sink_caught_up, unacked
from services.config import ENV_PREFIX, BusConfig
from services.stack import plan_stack

ROOT = Path(__file__).resolve().parents[2]
SINK_PORT = 5552
METRICS_PORT = 9100
PROXY = "proxy"
PROXY_FRONTEND_PORT = 5559
PROXY_BACKEND_PORT = 5560
PROXY_METRICS_PORT = 9101
WORKERS = ("w1", "w2")
HOSTS = ("sink", "controller", *WORKERS)
#: A proxy between the workers and their listeners; workers share the hosts "a" and "b".
PROXY_HOSTS = ("sink", "controller", "proxy", "a", "b")
REPLAY_WINDOW = BusConfig().replay_window


class HostStack:
    """The services planned on `network`'s hosts; `close()` closes their logs.

    `workers` are w1..wN; `placement` names the host of each service not on the host of
    its own name (several workers may share one).
    """

    def __init__(
        self,
        network: Network,
        data_dir: Path,
        epochs: int,
        workers: int = len(WORKERS),
        placement: dict[str, str] | None = None,
    ) -> None:
        self.network = network
        self.data_dir = data_dir
        self.files = RunFiles.of(data_dir, REPLAY_WINDOW)
        self.workers = tuple(f"w{index}" for index in range(1, workers + 1))
        self.placement = dict(placement or {})
        self.processes: dict[str, Any] = {}
        self._logs: list[IO[bytes]] = []
        plan = plan_stack(workers, epochs, str(data_dir))
        addresses = {name: self.host(name).address for name, _, _ in plan.services}
        #: Each service's `leyline` arguments and LEYLINE_* settings, in start order.
        self.plan: dict[str, tuple[list[str], dict[str, str]]] = {
            name: ([command], env) for name, command, env in on_hosts(plan, addresses).services
        }
        self.configure("sink", LEYLINE_BUS_METRICS_PORT=str(METRICS_PORT))
        self.configure("controller", LEYLINE_CONTROLLER_DEVICE="cpu")

    def through_proxy(self, host: str) -> None:
        """Put `leyline proxy` (CURVE, a proxy-role key) on `host`, started first: the workers
        publish only to it, and the controller and the sink subscribe through it."""
        address = self.network[host].address
        keys = self.plan["sink"][1]["LEYLINE_BUS_KEYS_DIR"]
        ensure_keys(keys, {PROXY: Role.PROXY})
        command = [
            "proxy",
            "--frontend", f"tcp://{address}:{PROXY_FRONTEND_PORT}",
            "--backend", f"tcp://{address}:{PROXY_BACKEND_PORT}",
            "--keys-dir", keys,
            "--metrics-port", str(PROXY_METRICS_PORT),
        ]  # fmt: skip
        self.plan = {PROXY: (command, {}), **self.plan}
        self.placement[PROXY] = host
        relays = json.dumps([f"{PROXY}@tcp://{address}:{PROXY_BACKEND_PORT}"])
        self.configure("controller", LEYLINE_CONTROLLER_RELAYS=relays)
        self.configure("sink", LEYLINE_SINK_RELAYS=relays)
        intake = json.dumps([f"{PROXY}@tcp://{address}:{PROXY_FRONTEND_PORT}"])
        for worker in self.workers:
            self.configure(worker, LEYLINE_WORKER_INTAKE=intake)

    def configure(self, name: str, **settings: str) -> None:
        """Add LEYLINE_* settings to `name`'s environment before it starts."""
        self.plan[name][1].update(settings)

    def refused(self, reporter: str, reason: str) -> dict[str, int]:
        """How many messages of each sender `reporter` refused for `reason`, from the
        violation events it sent the sink (rate-limited there, so a lower bound)."""
        rows = self.query(
            "SELECT json_extract(message, '$.payload.sender'), COUNT(*) FROM events"
            " WHERE event_type = 'CONTRACT_VIOLATION' AND sender = ?"
            " AND json_extract(message, '$.payload.reason') = ? GROUP BY 1",
            reporter,
            reason,
        )
        return {str(sender): int(count) for sender, count in rows}

    def recovered_after_s(self, listener: str, peer: str, since_ns: int) -> float | None:
        """Seconds from `since_ns` (this machine's clock) to `listener` reporting `peer` heard
        again (its PEER_RECOVERED event's send time); None if it has not."""
        rows = self.query(
            "SELECT MIN(sent_ns) FROM events WHERE event_type = 'PEER_RECOVERED'"
            " AND sender = ? AND json_extract(message, '$.payload.peer') = ? AND sent_ns > ?",
            listener,
            peer,
            since_ns,
        )
        return None if not rows or rows[0][0] is None else round((rows[0][0] - since_ns) / 1e9, 2)

    def host(self, name: str) -> Host:
        """The host `name` runs on."""
        return self.network[self.placement.get(name, name)]

    def start(self, *names: str) -> None:
        """Start `names` (default: all, sink first), each on its own host."""
        logs = self.data_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        inherited = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
        for name in names or tuple(self.plan):
            command, settings = self.plan[name]
            log = (logs / f"{name}.log").open("ab")
            self._logs.append(log)
            self.processes[name] = self.host(name).spawn(
                [sys.executable, "-m", "services.cli", *command],
                {**inherited, **settings},
                log,
                ROOT,
            )

    def stop(self, *names: str, timeout_s: float = 15.0) -> dict[str, int]:
        """SIGTERM `names` in order and wait; their exit codes."""
        codes = {}
        for name in names:
            process = self.processes[name]
            if process.poll() is None:
                process.terminate()
                process.wait(timeout_s)
            codes[name] = process.returncode
        return codes

    def wait_until(self, condition: Callable[[], bool], timeout_s: float, what: str) -> None:
        """Poll `condition` until true, or fail naming `what` with every log's tail; a service
        exiting with an error fails at once."""
        deadline = time.monotonic() + timeout_s
        while not condition():
            crashed = {n: p.returncode for n, p in self.processes.items() if p.poll()}
            if crashed or time.monotonic() > deadline:
                reason = f"{crashed} exited" if crashed else f"gave up after {timeout_s:g} s"
                pytest.fail(f"{reason} waiting for {what}\n{self.log_tails()}")
            time.sleep(0.2)

    def run_to_the_end(self, timeout_s: float = 120.0) -> dict[str, int]:
        """Wait for the workers to finish and the sink to settle, stop the controller and the
        sink; every service's exit code."""
        self.wait_until(self.finished, timeout_s, "the workers to finish")
        # A bound on a hang, not a timing: replay and resend backoff can take a while under load.
        self.wait_until(self.settled, 120.0, "the sink to hold every sequence and acks to settle")
        return {
            **{w: self.processes[w].returncode for w in self.workers},
            **self.stop("controller", "sink", *(n for n in self.plan if n == PROXY)),
        }

    def verdict_of_a_clean_run(self, codes: dict[str, int]) -> Verdict:
        """The delivery checker's verdict, having asserted the run was clean: every service
        exited 0, every journaled command applied once and in order, no telemetry lost."""
        assert codes == dict.fromkeys(codes, 0), self.log_tails()
        verdict = self.verdict()
        assert verdict.passed, verdict.failures
        counts = verdict.counts
        assert counts.commands_issued > 0 and counts.commands_applied == counts.commands_issued
        assert self.query("SELECT * FROM losses") == []
        assert counts.events_stored == counts.events_sent
        return verdict

    def epochs_stored(self) -> dict[str, int]:
        """The last epoch each worker reported that the sink has stored."""
        rows = self.query(
            "SELECT sender, MAX(epoch) FROM events WHERE event_type = 'EPOCH_COMPLETED'"
            " GROUP BY sender"
        )
        return {str(sender): int(epoch) for sender, epoch in rows}

    def finished(self, *workers: str) -> bool:
        return all(self.processes[w].poll() is not None for w in workers or self.workers)

    def settled(self) -> bool:
        """The sink holds every sequence it knows of, and every command is acknowledged."""
        caught_up = sink_caught_up(self.files, list(self.workers), 0)
        return caught_up and unacked(self.files.journal) == 0

    def sink_metric(self, name: str) -> float:
        """One counter from the sink's /metrics, read inside the sink's host."""
        return self.metric("sink", METRICS_PORT, name)

    def metric(self, service: str, port: int, name: str) -> float:
        """One counter (summed over its labels) from `service`'s /metrics on `port`, read
        inside its host."""
        url = f"http://127.0.0.1:{port}/metrics"
        script = f"import urllib.request as u; print(u.urlopen({url!r}, timeout=5).read().decode())"
        done = self.host(service).run([sys.executable, "-c", script])
        assert done.returncode == 0, done.stderr
        values = [
            float(line.rsplit(" ", 1)[1])
            for line in done.stdout.splitlines()
            if line.startswith(name) and line[len(name)] in " {"
        ]
        return sum(values)

    def journaled(self, worker: str) -> int:
        """How many commands to `worker` the controller has journaled."""
        rows = self.query(
            "SELECT COUNT(*) FROM commands WHERE worker = ?", worker, db=self.files.journal
        )
        return int(rows[0][0]) if rows else 0

    def query(self, sql: str, *params: object, db: Path | None = None) -> list[tuple[Any, ...]]:
        """Rows from the sink's database (or `db`), read-only; none before it has its tables."""
        path = db or self.files.sink_db
        if not path.is_file():
            return []
        uri = f"{path.resolve().as_uri()}?mode=ro"
        try:
            with sqlite3.connect(uri, uri=True, timeout=5.0) as db:
                return db.execute(sql, params).fetchall()
        except sqlite3.OperationalError:
            return []  # the sink has not created its tables yet

    def verdict(self) -> Verdict:
        return check(self.files)

    def log_tails(self, lines: int = 30) -> str:
        parts = []
        for log in sorted((self.data_dir / "logs").glob("*.log")):
            tail = log.read_text(errors="replace").splitlines()[-lines:]
            parts.append(f"--- {log.name}\n" + "\n".join(tail))
        return "\n".join(parts)

    def close(self) -> None:
        for log in self._logs:
            log.close()
