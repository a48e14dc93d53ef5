"""Simulated workers against the real controller and sink: the protocol holds end to end.

Sixteen simulated workers in two processes (so the launcher's start cue is exercised too),
CURVE on with a generated key each, against `leyline controller` and `leyline sink` as
processes. Afterwards: every command the controller issued was applied once and acked, the
sink stored every worker's every epoch, and nothing anywhere was refused.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from service_processes import ENTRYPOINT, ROOT, ServiceProcesses, query, service_env

from bus.security import Role, ensure_keys
from services.stack import free_ports

pytestmark = pytest.mark.slow

WORKERS = 16
PER_PROCESS = 8
#: Enough for the simulated curves to plateau and the heuristic to germinate.
EPOCHS = 16
RUN_DEADLINE_S = 240


@dataclass
class SimulatedRun:
    results: dict[str, Any]
    sink_db: Path
    services: ServiceProcesses

    def log_tails(self) -> str:
        return self.services.log_tails()


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimulatedRun]:
    data = tmp_path_factory.mktemp("simulated")
    keys = data / "keys"
    wanted = {"controller": Role.CONTROLLER, "sink": Role.SINK}
    wanted.update({f"sim{n}": Role.WORKER for n in range(1, WORKERS + 1)})
    ensure_keys(keys, wanted)
    commands, intake, sink_intake = (f"tcp://127.0.0.1:{p}" for p in free_ports(3))
    bus = {"LEYLINE_BUS_KEYS_DIR": str(keys)}
    services = ServiceProcesses(data / "logs")
    sink_db = data / "sink.db"
    try:
        services.start_service(
            "sink",
            "sink",
            {**bus, "LEYLINE_SINK_INTAKE": sink_intake, "LEYLINE_SINK_DB": str(sink_db)},
        )
        services.start_service(
            "controller",
            "controller",
            {
                **bus,
                "LEYLINE_CONTROLLER_COMMANDS": commands,
                "LEYLINE_CONTROLLER_INTAKE": intake,
                "LEYLINE_CONTROLLER_SINK": f"sink@{sink_intake}",
                "LEYLINE_CONTROLLER_JOURNAL": str(data / "journal.db"),
                "LEYLINE_CONTROLLER_DEVICE": "cpu",
            },
        )
        results = data / "simulate.json"
        with (data / "logs" / "simulate.log").open("w") as log:
            simulate = subprocess.run(
                [
                    *ENTRYPOINT, "simulate", f"--workers={WORKERS}",
                    f"--per-process={PER_PROCESS}", f"--epochs={EPOCHS}", "--epoch-s=0.5",
                    f"--results={results}",
                    f"--data-dir={data}", f"--commands=controller@{commands}",
                    f'--intake=["controller@{intake}", "sink@{sink_intake}"]',
                ],
                cwd=ROOT,
                env=service_env(bus),
                stdout=log,
                stderr=subprocess.STDOUT,
                timeout=RUN_DEADLINE_S,
                check=False,
            )  # fmt: skip
        codes = services.stop("controller", "sink")
        if simulate.returncode != 0 or any(codes.values()):
            pytest.fail(f"simulate {simulate.returncode}, services {codes}\n{services.log_tails()}")
        yield SimulatedRun(json.loads(results.read_text()), sink_db, services)
    finally:
        services.close()


def test_every_simulated_worker_ran_every_epoch_and_applied_each_command_once(
    run: SimulatedRun,
) -> None:
    workers = run.results["workers"]
    assert sorted(w["worker"] for w in workers) == sorted(f"sim{n}" for n in range(1, 17))
    assert {w["epochs"] for w in workers} == {EPOCHS}
    assert sum(w["commands"] for w in workers) > 0  # the controller did take decisions
    assert [w["worker"] for w in workers if w["applied_more_than_once"]] == []
    assert all(w["commands"] == w["last_applied"] for w in workers)
    assert [w["worker"] for w in workers if not w["farewell_answered"]] == []
    assert [w["worker"] for w in workers if w["rejections"]] == []
    assert run.results["niceness"] == [os.nice(0) + 10]  # yielding the CPU to the services


def test_every_issued_command_was_acked_with_one_outcome(run: SimulatedRun) -> None:
    commands = query(run.sink_db, "SELECT command_id FROM commands")
    unacked = query(
        run.sink_db,
        "SELECT command_id FROM commands WHERE command_id NOT IN (SELECT command_id FROM acks)",
    )
    two_outcomes = query(
        run.sink_db,
        "SELECT command_id FROM acks WHERE outcome != 'DUPLICATE' "
        "GROUP BY command_id HAVING COUNT(DISTINCT outcome) > 1",
    )
    applied = sum(w["commands"] for w in run.results["workers"])
    assert len(commands) == applied
    assert unacked == [] and two_outcomes == []


def test_the_sink_stored_every_workers_every_epoch_and_no_refusal(run: SimulatedRun) -> None:
    epochs = dict(
        query(
            run.sink_db,
            "SELECT sender, COUNT(DISTINCT epoch) FROM events "
            "WHERE event_type = 'EPOCH_COMPLETED' GROUP BY sender",
        )
    )
    assert epochs == {f"sim{n}": EPOCHS for n in range(1, WORKERS + 1)}
    hellos = query(run.sink_db, "SELECT DISTINCT sender FROM hellos WHERE channel = 'ack'")
    assert len(hellos) == WORKERS
    # Every farewell was answered, and the sink kept the answers (on each `cmd.<id>.`).
    answered = query(run.sink_db, "SELECT DISTINCT worker FROM hellos WHERE channel = 'cmd'")
    assert len(answered) == WORKERS
    violations = query(
        run.sink_db, "SELECT sender, message FROM events WHERE event_type = 'CONTRACT_VIOLATION'"
    )
    assert violations == []
    assert query(run.sink_db, "SELECT COUNT(*) FROM losses") == [(0,)]
