"""The closed loop as real processes with another host and another policy than the defaults.

- `topology = transformer`: one worker trains the character language model under the
  heuristic; it plateaus by epoch 15 (training is seeded and single-threaded, so always the
  same epoch), the controller germinates seeds in its `layer_<i>_post_block` slots and they
  move on.
- `policy = examples.own_policy:make_policy`: the documented example policy, loaded by import
  path in the controller's own process, decides for a digits worker; what it decides (the
  cheapest blueprint into every free slot at once) is not what the heuristic would.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from service_processes import log_tails, query

from leyline import SeedStage
from leyline.actions import SLOT_IDS
from services.stack import Stack, StackModel, StackPlan, plan_stack

pytestmark = pytest.mark.slow

#: Enough for the transformer's plateau (epoch 15), a germination and a margin of training.
TRANSFORMER_EPOCHS = 18
OWN_POLICY_EPOCHS = 3
#: Generous: a guard against a hung stack, not a measure of speed.
RUN_DEADLINE_S = 400.0


class Run:
    """A finished stack's sink database."""

    def __init__(self, plan: StackPlan) -> None:
        self.plan = plan

    def sink(self, sql: str) -> list[tuple[Any, ...]]:
        return query(self.plan.sink_db, sql)

    def log_tails(self) -> str:
        return log_tails(Path(self.plan.data_dir) / "logs")


def _run_stack(plan: StackPlan) -> Run:
    stack = Stack(plan)
    stack.start()
    try:
        deadline = time.monotonic() + RUN_DEADLINE_S
        for name, process in stack.workers().items():
            try:
                process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                logs = log_tails(Path(plan.data_dir) / "logs")
                pytest.fail(f"{name} did not finish in time\n{logs}")
        stack.stop()
        codes = {name: p.returncode for name, p in stack.processes.items()}
        assert codes == dict.fromkeys(codes, 0), log_tails(Path(plan.data_dir) / "logs")
    finally:
        stack.stop()
    return Run(plan)


@pytest.fixture(scope="module")
def transformer_run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    data = str(tmp_path_factory.mktemp("transformer-loop"))
    plan = plan_stack(1, TRANSFORMER_EPOCHS, data, model=StackModel(topology="transformer"))
    return _run_stack(plan)


@pytest.fixture(scope="module")
def own_policy_run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    data = str(tmp_path_factory.mktemp("own-policy-loop"))
    model = StackModel(policy="examples.own_policy:make_policy")
    return _run_stack(plan_stack(1, OWN_POLICY_EPOCHS, data, model=model))


def test_the_transformer_worker_trains_every_epoch_on_text(transformer_run: Run) -> None:
    rows = transformer_run.sink(
        "SELECT epoch, json_extract(message, '$.payload.val_accuracy') FROM events"
        " WHERE event_type = 'EPOCH_COMPLETED' ORDER BY epoch"
    )
    assert [epoch for epoch, _ in rows] == list(range(1, TRANSFORMER_EPOCHS + 1))
    # Next-character accuracy: from about a third to well past it.
    assert rows[-1][1] > rows[0][1] + 20.0


def test_the_heuristic_grows_seeds_in_transformer_slots(transformer_run: Run) -> None:
    applied = transformer_run.sink(
        "SELECT c.slot_id, json_extract(c.message, '$.blueprint_id'), a.outcome"
        " FROM commands c JOIN acks a USING (command_id) WHERE c.command_type = 'GERMINATE'"
    )
    assert applied, "no GERMINATE was issued\n" + transformer_run.log_tails()
    assert {outcome for *_, outcome in applied} == {"APPLIED"}
    assert {slot for slot, *_ in applied} <= set(SLOT_IDS["transformer"])
    assert {blueprint for _, blueprint, _ in applied} <= {"norm", "lora", "attention", "mlp"}
    reached = {
        SeedStage[stage] for (stage,) in transformer_run.sink("SELECT to_stage FROM stage_history")
    }
    assert SeedStage.TRAINING in reached, reached


def test_the_report_covers_the_transformer_run(transformer_run: Run) -> None:
    db = str(transformer_run.plan.sink_db)
    done = subprocess.run(
        [sys.executable, "-m", "services.cli", "report", "--db", db, "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    [worker] = json.loads(done.stdout)["workers"]
    assert worker["worker"] == "w1" and worker["epochs"] == TRANSFORMER_EPOCHS
    assert worker["accuracy_end"] > worker["accuracy_start"]
    assert worker["seeds_germinated"] >= 1
    assert worker["commands_applied"] == worker["commands_issued"] >= 1
    assert (worker["gaps"], worker["messages_lost"], worker["illegal_stage_changes"]) == (0, 0, 0)


def test_the_own_policy_makes_the_controllers_decisions(own_policy_run: Run) -> None:
    commands = own_policy_run.sink(
        "SELECT c.worker, c.slot_id, json_extract(c.message, '$.blueprint_id'),"
        " json_extract(c.message, '$.reason'), a.outcome"
        " FROM commands c JOIN acks a USING (command_id) WHERE c.command_type = 'GERMINATE'"
    )
    # At the first signal, before the heuristic would even consider it (warm-up, plateau).
    grown = {(worker, slot) for worker, slot, *_ in commands}
    assert grown == {("w1", slot) for slot in SLOT_IDS["cnn"]}
    assert {row[2:] for row in commands} == {("norm", "learned", "APPLIED")}
    germinated_at = own_policy_run.sink(
        "SELECT MIN(epoch) FROM events WHERE event_type = 'SEED_GERMINATED'"
    )
    assert germinated_at[0][0] < 5  # the heuristic waits 5 warm-up epochs
