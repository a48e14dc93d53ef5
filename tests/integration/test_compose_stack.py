"""The compose file's stack, run as local processes: each service's exact command and settings.

No Docker: every service of docker-compose.yml runs as `leyline <command>` with its own
environment, service host names mapped to 127.0.0.1, its volume under a temporary data root
and a short epoch count. Services start in `depends_on` order, each once its dependencies
pass the compose healthcheck, which runs here as the very command compose would run.
The file's fixed ports (5550-5552, metrics 91xx) must be free; the module skips otherwise.
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import time
import urllib.request
from collections import defaultdict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from service_processes import ENTRYPOINT, ROOT, ServiceProcesses, query, service_env

from services.compose import ComposeService, compose_config, compose_services, local_process

pytest.importorskip("yaml", reason="reading the compose file needs PyYAML")
pytestmark = pytest.mark.slow

COMPOSE_FILE = ROOT / "docker-compose.yml"
#: Enough for each worker to live a few seconds once serving metrics, and no more.
EPOCHS = 5
HEALTHY_TIMEOUT_S = 120.0
HEALTH_INTERVAL_S = 0.2
RUN_DEADLINE_S = 240.0
_LOOPBACK_PORT = re.compile(r"tcp://127\.0\.0\.1:(\d+)")
_SIGNALS_DELIVERED = re.compile(r'^leyline_delivered_total\{[^}]*channel="sig"[^}]*\} (\S+)$', re.M)


@dataclass(frozen=True)
class ComposeRun:
    """What the stack did: health, the controller's metrics at the end, exit codes, the sink."""

    processes: ServiceProcesses
    workers: dict[str, str]  # service name -> worker id
    health: dict[str, int]  # service name -> the healthcheck's exit code
    controller_metrics: str
    exit_codes: dict[str, int]
    sink_db: Path

    def sink(self, sql: str) -> list[tuple[Any, ...]]:
        return query(self.sink_db, sql)

    def log_tails(self) -> str:
        return self.processes.log_tails()


def busy_ports(environments: Mapping[str, Mapping[str, str]]) -> list[int]:
    """The loopback and metrics ports the services would use that something else holds."""
    ports: set[int] = set()
    for env in environments.values():
        for key, value in env.items():
            ports.update(int(port) for port in _LOOPBACK_PORT.findall(value))
            if key == "LEYLINE_BUS_METRICS_PORT":
                ports.add(int(value))
    busy = []
    for port in sorted(ports):
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as ZeroMQ and HTTP do
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                busy.append(port)
    return busy


def start_order(services: Mapping[str, ComposeService]) -> list[str]:
    """Every service after the services it depends on."""
    order: list[str] = []
    while len(order) < len(services):
        ready = sorted(
            name
            for name, service in services.items()
            if name not in order and set(service.depends_on) <= set(order)
        )
        assert ready, f"depends_on has a cycle among {set(services) - set(order)}"
        order += ready
    return order


def healthcheck(test: list[str], env: Mapping[str, str]) -> int:
    """The compose healthcheck command, run here against a service with environment `env`."""
    assert test[:2] == ["CMD", "python"], test
    argv = [sys.executable, *test[2:]]
    return subprocess.run(argv, env=service_env(env), capture_output=True, check=False).returncode


@pytest.fixture(scope="module")
def compose_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ComposeRun]:
    data = tmp_path_factory.mktemp("compose")
    services = compose_services([COMPOSE_FILE])
    checks = {
        name: raw["healthcheck"]["test"]
        for name, raw in compose_config([COMPOSE_FILE])["services"].items()
        if raw["healthcheck"].get("test") not in (None, ["NONE"])
    }
    launches = {
        name: local_process(s, list(services), data, ENTRYPOINT) for name, s in services.items()
    }
    workers = {
        n: env["LEYLINE_WORKER_ID"]
        for n, (_, env) in launches.items()
        if "LEYLINE_WORKER_ID" in env
    }
    for name in workers:
        launches[name][1]["LEYLINE_WORKER_EPOCHS"] = str(EPOCHS)
    busy = busy_ports({name: env for name, (_, env) in launches.items()})
    if busy:
        pytest.skip(f"the compose file's fixed ports {busy} are in use on this machine")
    processes = ServiceProcesses(data / "logs")
    health: dict[str, int] = {}

    def await_health(name: str) -> int:
        """Poll the service's healthcheck until it passes; its last exit code."""
        process, env = processes.processes[name], launches[name][1]
        deadline = time.monotonic() + HEALTHY_TIMEOUT_S
        while (code := healthcheck(checks[name], env)) != 0 and process.poll() is None:
            if time.monotonic() >= deadline:
                break
            time.sleep(HEALTH_INTERVAL_S)
        health[name] = code
        return code

    try:
        order = start_order(services)
        for name in order:
            for dependency in services[name].depends_on:
                if dependency in services[name].completed:
                    if processes.processes[dependency].wait(HEALTHY_TIMEOUT_S) != 0:
                        pytest.fail(f"{dependency} failed\n{processes.log_tails()}")
                elif dependency not in health and await_health(dependency) != 0:
                    pytest.fail(f"{dependency} never became healthy\n{processes.log_tails()}")
            argv, env = launches[name]
            processes.start(name, argv, env)
        for name in workers:
            await_health(name)
        deadline = time.monotonic() + RUN_DEADLINE_S
        for name in workers:
            try:
                processes.processes[name].wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pytest.fail(f"{name} did not finish {EPOCHS} epochs\n{processes.log_tails()}")
        port = launches["controller"][1]["LEYLINE_BUS_METRICS_PORT"]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
            metrics = reply.read().decode()
        exit_codes = {name: processes.processes[name].returncode for name in workers}
        exit_codes |= processes.stop(*[n for n in reversed(order) if n not in workers])
        sink_db = data / "sink-data" / "sink.db"
        yield ComposeRun(processes, workers, health, metrics, exit_codes, sink_db)
    finally:
        processes.close()


def test_every_service_passes_its_compose_healthcheck(compose_run: ComposeRun) -> None:
    assert compose_run.health == dict.fromkeys(["sink", "controller", *compose_run.workers], 0)


def test_every_service_exits_cleanly(compose_run: ComposeRun) -> None:
    assert compose_run.exit_codes == dict.fromkeys([*compose_run.health, "keys"], 0)


def test_both_workers_epochs_reach_the_sink(compose_run: ComposeRun) -> None:
    epochs: dict[str, list[int]] = defaultdict(list)
    for sender, epoch in compose_run.sink(
        "SELECT sender, epoch FROM events WHERE event_type = 'EPOCH_COMPLETED'"
    ):
        epochs[sender].append(epoch)
    worker_ids = sorted(compose_run.workers.values())
    expected = list(range(1, EPOCHS + 1))
    assert {w: sorted(epochs[w]) for w in worker_ids} == dict.fromkeys(worker_ids, expected)


def test_the_controller_hears_the_workers_signals(compose_run: ComposeRun) -> None:
    delivered = _SIGNALS_DELIVERED.findall(compose_run.controller_metrics)
    assert delivered, compose_run.controller_metrics
    assert float(delivered[0]) >= EPOCHS * len(compose_run.workers)


def test_every_command_issued_is_acknowledged(compose_run: ComposeRun) -> None:
    issued = {row[0] for row in compose_run.sink("SELECT command_id FROM commands")}
    acked = {row[0] for row in compose_run.sink("SELECT command_id FROM acks")}
    assert issued <= acked
