"""The closed loop as real processes: workers train, the controller commands, the sink records.

One `leyline up` stack (sink, controller, two workers) runs to the end once for the module and
is stopped cleanly (workers finish, then the controller, then the sink); every test reads what
it left in the sink's database and the controller's journal. Fourteen epochs are enough for
the heuristic (5 warm-up epochs, then 3 on a plateau) to germinate seeds and for them to move.
"""

from __future__ import annotations

import subprocess
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from service_processes import log_tails, query

from leyline import SeedStage
from leyline.lifecycle import is_valid_transition
from services.stack import Stack, StackPlan, plan_stack

pytestmark = pytest.mark.slow

WORKERS = 2
EPOCHS = 14
#: Generous: a guard against a hung stack, not a measure of speed.
RUN_DEADLINE_S = 240.0


@dataclass(frozen=True)
class LoopRun:
    """A finished stack: its plan and every service's exit code."""

    plan: StackPlan
    exit_codes: dict[str, int]

    @property
    def workers(self) -> list[str]:
        return [name for name, command, _ in self.plan.services if command == "worker"]

    def sink(self, sql: str, *params: object) -> list[tuple[Any, ...]]:
        return query(self.plan.sink_db, sql, params)

    def journal(self, sql: str) -> list[tuple[Any, ...]]:
        return query(Path(self.plan.data_dir) / "controller-journal.db", sql)

    def log_tails(self) -> str:
        return log_tails(Path(self.plan.data_dir) / "logs")


@pytest.fixture(scope="module")
def loop_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoopRun]:
    plan = plan_stack(WORKERS, EPOCHS, str(tmp_path_factory.mktemp("closed-loop")))
    stack = Stack(plan)
    stack.start()
    try:
        deadline = time.monotonic() + RUN_DEADLINE_S
        for name, process in stack.workers().items():
            try:
                process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                logs = log_tails(Path(plan.data_dir) / "logs")
                pytest.fail(f"{name} did not finish {EPOCHS} epochs in time\n{logs}")
        stack.stop()  # the controller, then the sink: it commits what is still in flight
        yield LoopRun(plan, {name: p.returncode for name, p in stack.processes.items()})
    finally:
        stack.stop()


def test_every_service_exits_cleanly(loop_run: LoopRun) -> None:
    assert loop_run.exit_codes == dict.fromkeys(loop_run.exit_codes, 0)


def test_every_worker_completes_every_epoch(loop_run: LoopRun) -> None:
    rows = loop_run.sink("SELECT sender, epoch FROM events WHERE event_type = 'EPOCH_COMPLETED'")
    epochs: dict[str, list[int]] = defaultdict(list)
    for sender, epoch in rows:
        epochs[sender].append(epoch)
    expected = list(range(1, EPOCHS + 1))
    assert {worker: sorted(epochs[worker]) for worker in loop_run.workers} == dict.fromkeys(
        loop_run.workers, expected
    )


def test_the_controller_germinates_seeds_and_the_workers_apply_them(loop_run: LoopRun) -> None:
    germinations = loop_run.sink(
        "SELECT c.worker, a.outcome FROM commands c JOIN acks a USING (command_id)"
        " WHERE c.command_type = 'GERMINATE'"
    )
    assert germinations, "no GERMINATE command was issued"
    assert {outcome for _, outcome in germinations} == {"APPLIED"}
    germinated = loop_run.sink("SELECT sender FROM events WHERE event_type = 'SEED_GERMINATED'")
    assert len(germinated) == len(germinations)


def test_every_command_is_acknowledged(loop_run: LoopRun) -> None:
    issued = {row[0] for row in loop_run.sink("SELECT command_id FROM commands")}
    acked = {row[0] for row in loop_run.sink("SELECT command_id FROM acks")}
    assert issued, "the controller issued no command"
    assert issued <= acked
    journaled = loop_run.journal("SELECT command_id, outcome FROM commands")
    assert {command_id for command_id, _ in journaled} == issued
    assert all(outcome is not None for _, outcome in journaled)


def test_every_stage_change_is_legal_and_continuous(loop_run: LoopRun) -> None:
    history = loop_run.sink(
        "SELECT sender, slot_id, from_stage, to_stage, illegal FROM stage_history"
        " ORDER BY sender, slot_id, sequence"
    )
    assert history, "no seed changed stage"
    assert [row for row in history if row[4] is not None] == []
    paths: dict[tuple[str, str], list[tuple[SeedStage, SeedStage]]] = defaultdict(list)
    for sender, slot, from_stage, to_stage, _ in history:
        paths[sender, slot].append((SeedStage[from_stage], SeedStage[to_stage]))
    for slot, moves in paths.items():
        assert moves[0][0] is SeedStage.DORMANT, slot
        for (_, arrived), (left, _) in pairwise(moves):
            assert left is arrived, f"{slot}: moved on from {left.name}, was in {arrived.name}"
        assert all(is_valid_transition(a, b) for a, b in moves), (slot, moves)
    reached = {to_stage for moves in paths.values() for _, to_stage in moves}
    assert SeedStage.TRAINING in reached, "no germinated seed started training"


def test_the_sink_holds_every_event_each_service_sent(loop_run: LoopRun) -> None:
    streams = loop_run.sink(
        "SELECT sender, incarnation, COUNT(*), MIN(sequence), MAX(sequence) FROM events"
        " WHERE channel = 'tel' AND sender != 'sink' GROUP BY sender, topic, incarnation"
    )
    senders = [row[0] for row in streams]
    assert sorted(senders) == sorted(["controller", *loop_run.workers])  # one incarnation each
    for sender, _, count, first, last in streams:
        assert (first, count) == (1, last), f"{sender}: {count} events stored of 1..{last}"
    assert loop_run.sink("SELECT * FROM losses") == []
