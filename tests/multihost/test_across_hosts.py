"""The closed loop across hosts: every service on its own namespace host, over the test subnet.

A short cut of the sink's link drops its connections (ZMTP heartbeats time out after 5 s), so
what was in flight is gone and the sink must refill the gap from the workers' replay windows,
on the addresses they advertised: the path that a loopback-only replay address breaks.
Partitions cut a worker or the controller mid-command for longer than a peer takes to go
stale; the delivery checker then judges the journal, the checkpoints and the sink's records,
and the controller's view of the workers' stages must have caught up (no report refused).
Workers that finish while the controller is cut off wait for their farewell's answer.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from host_stack import WORKERS, HostStack

pytestmark = [pytest.mark.multihost, pytest.mark.slow]

#: Enough that the workers outlive the cut by many epochs even on an idle machine (~0.4 s
#: an epoch): a publisher that exits while cut off takes its last messages with it.
EPOCHS = 36
#: Longer than the 5 s ZMTP heartbeat timeout, so the cut connections are dropped.
CUT_S = 7.0
#: The partition: a host cut mid-run for longer than a peer takes to go stale (5 s). Every
#: worker must outlive the cut, not only the commanded one: on the heal the controller
#: commands the others too, and a worker that finished meanwhile never acks (50 epochs,
#: ~0.21 s each on an idle machine, ended with the heal: the run never settled).
PARTITION_EPOCHS = 100
PARTITION_S = 8.0
#: Short runs, so that both workers end while the controller is cut off (the first command
#: comes at about epoch 10).
FAREWELL_EPOCHS = 30
START_TIMEOUT_S = 120.0
RUN_TIMEOUT_S = 120.0


def test_the_closed_loop_runs_across_hosts_and_the_sink_replays_across_a_cut(
    host_stack: Callable[[int], HostStack],
) -> None:
    stack = host_stack(EPOCHS)
    stack.start()
    stack.wait_until(
        lambda: len(stack.epochs_stored()) == len(WORKERS), START_TIMEOUT_S, "a first epoch"
    )
    before = stack.epochs_stored()
    gaps = stack.sink_metric("leyline_gaps_total")
    stack.host("sink").cut()
    time.sleep(CUT_S)  # the fault's duration, not a synchronisation
    stack.host("sink").heal()
    # What was in flight at the cut is gone: the sink notices (from the next message or
    # heartbeat) and must refill it by replay, or the checks below find a loss row or a hole.
    stack.wait_until(
        lambda: stack.sink_metric("leyline_gaps_total") > gaps, 30.0, "the sink to see the cut"
    )
    stack.verdict_of_a_clean_run(stack.run_to_the_end(RUN_TIMEOUT_S))
    assert all(stack.epochs_stored()[w] == EPOCHS > before[w] for w in WORKERS)


#: Who listens to each kind of host we cut, and so must report it stale.
LISTENERS = {"worker": ("controller", "sink"), "controller": ("sink", *WORKERS)}


@pytest.mark.parametrize("cut", list(LISTENERS))
def test_a_partitioned_host_costs_no_command_twice_or_out_of_order_and_no_telemetry(
    host_stack: Callable[[int], HostStack], cut: str
) -> None:
    stack = host_stack(PARTITION_EPOCHS)
    stack.start()
    # Cut once a worker is being commanded: its seed is mid-lifecycle, a command may be in
    # flight. Which worker plateaus first, and so is commanded first, is its training's business.
    stack.wait_until(
        lambda: any(stack.journaled(w) > 0 for w in WORKERS), START_TIMEOUT_S, "a command"
    )
    worker = next(w for w in WORKERS if stack.journaled(w) > 0)
    host = worker if cut == "worker" else cut
    stack.host(host).cut()
    time.sleep(PARTITION_S)  # the fault's duration, not a synchronisation
    stack.host(host).heal()
    healed_ns = time.time_ns()
    finished = [w for w in WORKERS if stack.finished(w)]
    assert finished == [], f"{finished} finished before the partition healed"
    verdict = stack.verdict_of_a_clean_run(stack.run_to_the_end(RUN_TIMEOUT_S))
    # Every side of the cut saw the host go silent, and come back.
    assert {(listener, host) for listener in LISTENERS[cut]} <= set(verdict.stale_reports)
    assert verdict.counts.peer_recovered >= len(LISTENERS[cut])
    # The controller missed the stage reports sent across the cut for good; its view of the
    # worker's slots resynced at the hole (TransitionGuard) instead of refusing every later
    # report (before: 6 of w1's later reports refused as illegal transitions).
    refused = stack.refused("controller", "illegal_transition")
    recovery = {n: stack.recovered_after_s(n, host, healed_ns) for n in LISTENERS[cut]}
    print(
        f"partition {host}: heard again after (s) {recovery}, refused {refused}, {verdict.counts}"
    )
    assert refused == {}


def test_workers_that_finish_while_the_controller_is_cut_off_are_answered_after_the_heal(
    host_stack: Callable[[int], HostStack],
) -> None:
    stack = host_stack(FAREWELL_EPOCHS)
    stack.start()
    # Cut once a worker is being commanded: a command may be in flight across the cut.
    stack.wait_until(
        lambda: any(stack.journaled(w) > 0 for w in WORKERS), START_TIMEOUT_S, "a command"
    )
    stack.host("controller").cut()
    # The sink still hears the workers: wait until both have published their last epoch.
    stack.wait_until(
        lambda: all(stack.epochs_stored().get(w) == FAREWELL_EPOCHS for w in WORKERS),
        RUN_TIMEOUT_S,
        "the last epochs",
    )
    time.sleep(CUT_S)  # past the heartbeat timeout: the connections, and what they held, drop
    exited = [w for w in WORKERS if stack.finished(w)]
    stack.host("controller").heal()
    # Before farewells, a worker exited here, and what the controller had sent it stayed
    # unacknowledged for good, resent every 30 s.
    assert exited == [], f"{exited} exited before the controller heard their farewell"
    codes = stack.run_to_the_end(RUN_TIMEOUT_S)  # every command settled, the sink caught up
    assert codes == dict.fromkeys(codes, 0), stack.log_tails()
    verdict = stack.verdict()
    assert verdict.passed, verdict.failures
    counts = verdict.counts
    assert counts.commands_issued > 0
    assert counts.commands_issued == counts.commands_applied + counts.commands_unapplied
    assert stack.query("SELECT * FROM losses") == []
    # The controller's answers, on each worker's command topic, as the sink recorded them.
    answered = stack.query(
        "SELECT worker FROM hellos WHERE channel = 'cmd' AND json_extract(message, '$.finished')"
    )
    assert {worker for (worker,) in answered} == set(WORKERS)
    print(f"farewell across a cut: {counts}")
