"""SIGSTOP a worker past the stale threshold, SIGCONT it: peers notice, nothing is lost."""

from __future__ import annotations

import pytest
from fault_stack import FaultHarness

from services.chaos import summary

pytestmark = pytest.mark.slow


def test_paused_worker_is_reported_stale_then_recovered_and_loses_nothing(
    harness: FaultHarness,
) -> None:
    harness.start()
    harness.wait_training()
    harness.wait_applied("w1", 1)
    harness.stack.pause("w1")
    harness.injector.wait(harness.settings.stale_after_s * 2)
    harness.stack.resume("w1")
    harness.wait_more_applied("w1", 2)

    verdict = harness.finish()

    assert verdict.passed, summary(verdict)
    assert ("controller", "w1") in verdict.stale_reports
    assert ("sink", "w1") in verdict.stale_reports
    assert verdict.counts.peer_recovered >= 2
    assert verdict.counts.events_lost == 0
