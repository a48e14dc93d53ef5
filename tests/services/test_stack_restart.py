"""`leyline up`'s supervisor restarts a service that dies, a bounded number of times.

Real processes: the services are SIGKILLed mid-run, as a libzmq assertion or the OOM killer
would end them, and the run must still complete from what they kept on disk.
"""

from __future__ import annotations

import os
import signal
import sqlite3
from pathlib import Path

import pytest

from services.progress import WorkerProgress
from services.stack import RestartPolicy, Stack, StackPlan, plan_stack

pytestmark = pytest.mark.slow

EPOCHS = 4
#: Quick restarts: the test waits for them.
POLICY = RestartPolicy(max_restarts=2, backoff_s=0.2)


def _completed_epochs(db: Path, worker: str) -> set[int]:
    with sqlite3.connect(db) as connection:
        rows = connection.execute(
            "SELECT epoch FROM events WHERE sender = ? AND event_type = 'EPOCH_COMPLETED'",
            (worker,),
        ).fetchall()
    return {epoch for (epoch,) in rows}


def test_killed_worker_and_controller_are_restarted_and_the_run_completes(
    tmp_path: Path,
) -> None:
    plan = plan_stack(1, EPOCHS, str(tmp_path))
    lines: list[str] = []
    stack = Stack(plan, restart=POLICY, report=lines.append)
    kills = {"w1": 1, "controller": 2}  # whom to kill once w1 has completed that epoch

    def kill_on_cue(progress: list[WorkerProgress]) -> None:
        epoch = max((w.epoch for w in progress if w.worker == "w1"), default=0)
        for name, cue in list(kills.items()):
            if epoch >= cue and stack.processes[name].poll() is None:
                os.kill(stack.processes[name].pid, signal.SIGKILL)
                del kills[name]
                break  # one at a time: the next only once this one has died and come back

    stack.start()
    try:
        finished = stack.wait_workers(kill_on_cue, interval_s=0.2)
    finally:
        stack.stop()

    assert kills == {}, "the run ended before every kill"
    assert finished, lines
    assert stack.restarts == {"w1": 1, "controller": 1}
    assert lines == [
        "leyline up: w1 was killed by SIGKILL; restart 1 of 2 in 0.2 s",
        "leyline up: controller was killed by SIGKILL; restart 1 of 2 in 0.2 s",
    ]
    # The restarted worker went on from its checkpoint to the last epoch, then exited 0,
    # and a finished worker is not restarted.
    assert _completed_epochs(plan.sink_db, "w1") == set(range(1, EPOCHS + 1))
    assert stack.processes["w1"].returncode == 0


def test_a_service_that_keeps_dying_is_given_up_after_its_restarts(tmp_path: Path) -> None:
    broken = StackPlan(str(tmp_path), (("w1", "worker", {"LEYLINE_WORKER_EPOCHS": "-1"}),))
    lines: list[str] = []
    stack = Stack(
        broken, restart=RestartPolicy(max_restarts=2, backoff_s=0.01), report=lines.append
    )
    try:
        stack.start()
        assert not stack.wait_workers(lambda _: None, interval_s=0.05)
    finally:
        stack.stop()
    assert stack.restarts == {"w1": 2}
    assert lines == [
        "leyline up: w1 exited with status 2; restart 1 of 2 in 0.01 s",
        "leyline up: w1 exited with status 2; restart 2 of 2 in 0.02 s",
        "leyline up: w1 exited with status 2; not restarted again",
    ]
    log = (tmp_path / "logs" / "w1.log").read_text()
    assert log.count("invalid config") == 3  # every start appended to the same log
