"""Clock skew across hosts: one worker's clock ten minutes ahead, the other's ten behind.

Namespaces share the kernel's clock, so each worker's is shifted by `LEYLINE_CLOCK_OFFSET_S`
(`services.clock`: every send time and incarnation it stamps). Compared with the controller's
clock, w1's signals would all look fresh and w2's all stale; learned per sender, their age is
only their delay. So both workers are commanded, and a signal genuinely delayed (w1 cut off
for a moment, its queued signals arriving late) is still refused as stale. And a worker
restarted with its clock set back is a later incarnation (it keeps its last one), not stale.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable

import pytest
from host_stack import ROOT, WORKERS, HostStack

from services.clock import CLOCK_OFFSET_VARIABLE

pytestmark = [pytest.mark.multihost, pytest.mark.slow]

EPOCHS = 40
OFFSETS_S = {"w1": 600, "w2": -600}
#: Signals older than this (over their sender's fastest recent transit) are refused.
MAX_SIGNAL_AGE_S = 1.0
#: Shorter than the 5 s ZMTP heartbeat timeout (the connection survives and what w1 queued
#: meanwhile arrives late, TCP retransmitting it), longer than the age limit.
DELAY_S = 2.5
START_TIMEOUT_S = 120.0
#: How far a restarted worker's clock is set back: its start time is then before its last one.
STEP_BACK_S = 600
#: Enough that w1 is commanded, stopped and restarted well before its run would end.
RESTART_EPOCHS = 24


def test_workers_ten_minutes_ahead_and_behind_are_commanded_and_a_delayed_signal_is_stale(
    host_stack: Callable[[int], HostStack],
) -> None:
    stack = host_stack(EPOCHS)
    for worker, offset in OFFSETS_S.items():
        stack.configure(worker, **{CLOCK_OFFSET_VARIABLE: str(offset)})
    stack.configure("controller", LEYLINE_BUS_MAX_SIGNAL_AGE_S=str(MAX_SIGNAL_AGE_S))
    stack.start()
    stack.wait_until(
        lambda: all(stack.journaled(w) > 0 for w in WORKERS), START_TIMEOUT_S, "commands to both"
    )
    stack.host("w1").cut()
    time.sleep(DELAY_S)  # the fault's duration, not a synchronisation
    stack.host("w1").heal()
    stack.wait_until(
        lambda: stack.refused("controller", "stale").get("w1", 0) > 0,
        30.0,
        "the controller to refuse w1's delayed signals as stale",
    )
    verdict = stack.verdict_of_a_clean_run(stack.run_to_the_end())

    stale = stack.refused("controller", "stale")
    report_command = ["report", "--json", "--db", str(stack.files.sink_db)]
    done = stack.host("sink").run(
        [sys.executable, "-m", "services.cli", *report_command], env={"PYTHONPATH": str(ROOT)}
    )
    assert done.returncode == 0, done.stderr
    report = {row["worker"]: row for row in json.loads(done.stdout)["workers"]}
    print(f"skew: refused stale {stale}, counts {verdict.counts}")
    for worker in WORKERS:
        row = report[worker]
        print(f"skew: {worker} {OFFSETS_S[worker]:+d} s: {row}")
        assert row["epochs"] == EPOCHS
        assert row["commands_issued"] > 0 and row["commands_applied"] > 0
    # Neither clock's offset made its signals stale wholesale: w2 (behind) was commanded all
    # run long, and nothing was refused for an incarnation from the future.
    assert stack.refused("controller", "future_incarnation") == {}
    assert stack.refused("sink", "future_incarnation") == {}


def test_a_worker_restarted_with_its_clock_set_back_is_taken_as_a_restart_not_stale(
    host_stack: Callable[[int], HostStack],
) -> None:
    stack = host_stack(RESTART_EPOCHS)
    stack.start()
    # The first worker commanded (which one plateaus first is its training's business): its
    # restart then resumes a ledger and seeds, not only epochs.
    stack.wait_until(
        lambda: any(stack.journaled(w) > 0 for w in WORKERS), START_TIMEOUT_S, "a command"
    )
    worker = next(w for w in WORKERS if stack.journaled(w) > 0)
    assert stack.stop(worker) == {worker: 0}
    stack.configure(worker, **{CLOCK_OFFSET_VARIABLE: str(-STEP_BACK_S)})
    stack.start(worker)  # resumes from its checkpoint, its clock ten minutes behind
    verdict = stack.verdict_of_a_clean_run(stack.run_to_the_end())

    incarnations = stack.query(
        "SELECT DISTINCT incarnation FROM events WHERE sender = ? ORDER BY incarnation", worker
    )
    print(f"restart: {worker} incarnations {incarnations}, counts {verdict.counts}")
    assert len(incarnations) == 2
    assert stack.epochs_stored()[worker] == RESTART_EPOCHS
    for listener in ("controller", "sink"):
        assert worker not in stack.refused(listener, "stale")
