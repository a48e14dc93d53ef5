"""The controller's view of each slot's stage after a partition: it catches up with the worker.

The controller judges the stage changes workers report (`TransitionGuard`) against what it saw
before. Cut off longer than a connection survives, it misses some reports for good (it keeps
no replay of them); without a resync its view stays behind the worker's, and every later
report of that slot is refused as an illegal transition. Seeing a hole in a worker's report
stream, it forgets that worker's stages and takes them from the next reports.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from host_stack import HostStack

pytestmark = [pytest.mark.multihost, pytest.mark.slow]

EPOCHS = 50
#: Longer than the 5 s ZMTP heartbeat timeout: the cut connections drop, what w1 sent
#: meanwhile never reaches the controller.
PARTITION_S = 8.0
START_TIMEOUT_S = 120.0


def test_after_a_partition_the_controller_refuses_no_report_of_the_worker_it_lost(
    host_stack: Callable[[int], HostStack],
) -> None:
    stack = host_stack(EPOCHS)
    stack.start()
    stack.wait_until(lambda: stack.journaled("w1") > 0, START_TIMEOUT_S, "a command to w1")
    stack.host("w1").cut()
    time.sleep(PARTITION_S)  # the fault's duration, not a synchronisation
    stack.host("w1").heal()
    assert not stack.finished("w1"), "w1 finished before the partition healed"
    verdict = stack.verdict_of_a_clean_run(stack.run_to_the_end())

    refused = stack.refused("controller", "illegal_transition")
    rejected = stack.query(
        "SELECT reason, COUNT(*) FROM acks WHERE outcome = 'REJECTED' GROUP BY reason"
    )
    print(
        f"stage view: controller refused {refused}; commands rejected {rejected}; "
        f"w1 silent for (ms) {stack.silences_ms('controller', 'w1')} at the controller, "
        f"{stack.silences_ms('sink', 'w1')} at the sink; counts {verdict.counts}"
    )
    assert ("controller", "w1") in verdict.stale_reports
    assert refused == {}
    assert rejected == []
