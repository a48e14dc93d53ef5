"""SIGKILL each kind of service mid-run, restart it, and check every delivery guarantee."""

from __future__ import annotations

import pytest
from fault_stack import FaultHarness

from services.chaos import summary

pytestmark = pytest.mark.slow


def test_worker_killed_mid_epoch_resumes_and_applies_every_command_once(
    harness: FaultHarness,
) -> None:
    harness.start()
    harness.wait_training()
    harness.wait_applied("w1", 2)
    harness.wait_epoch_started("w1")
    harness.stack.kill("w1")
    harness.stack.launch("w1")
    harness.wait_more_applied("w1", 2)

    verdict = harness.finish()

    assert verdict.passed, summary(verdict)
    assert harness.incarnations("w1") == 2
    # The new incarnation went on from its checkpoint, not from epoch 1.
    (first_epoch,) = harness.query(
        "SELECT MIN(epoch) FROM events WHERE sender = 'w1' AND event_type = 'EPOCH_COMPLETED'"
        " AND incarnation = (SELECT MAX(incarnation) FROM events WHERE sender = 'w1')"
    )[0]
    assert isinstance(first_epoch, int) and first_epoch > 1


def test_controller_killed_restores_its_journal_and_continues_numbering(
    harness: FaultHarness,
) -> None:
    harness.start()
    harness.wait_training()
    harness.wait_applied("w1", 2)
    harness.stack.kill("controller")
    issued = harness.journaled("w1")
    harness.injector.wait(0.5)
    harness.stack.launch("controller")
    harness.wait_applied("w1", issued + 2)

    verdict = harness.finish()

    assert verdict.passed, summary(verdict)
    assert harness.incarnations("controller") == 2
    assert verdict.counts.commands_issued >= issued + 2


def test_sink_killed_recovers_what_it_had_not_committed_from_the_windows(
    harness: FaultHarness,
) -> None:
    harness.start()
    harness.wait_training()
    harness.wait_applied("w1", 2)
    harness.stack.kill("sink")
    harness.injector.wait(1.0)
    harness.stack.launch("sink")
    harness.wait_more_applied("w1", 2)

    verdict = harness.finish()

    assert verdict.passed, summary(verdict)
    # Every publisher outlived the sink's outage, so nothing was beyond repair.
    assert verdict.counts.events_lost == 0
    assert verdict.counts.commands_unwitnessed == 0
