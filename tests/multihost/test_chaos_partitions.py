"""`leyline chaos` over namespace hosts with partitions among its faults: each service on a
host of its own, hosts cut off for seconds at a time, and the checker's invariants after."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from services.chaos import ChaosSettings, FaultKind, run_chaos, summary

pytestmark = [pytest.mark.multihost, pytest.mark.slow]


def test_partitions_keep_every_delivery_guarantee(netns: None, tmp_path: Path) -> None:
    settings = ChaosSettings(
        faults=4,
        workers=2,
        seed=20,  # partitions of the controller and of w2, then kills
        settle_s=3.0,
        namespaces=True,
        kinds=(FaultKind.PARTITION, FaultKind.KILL),
        partition_s=(5.0, 8.0),
        # Delivery after partitions is judged here; the memory bound is test_chaos_run's (a
        # worker restarted on a loaded machine can do its start-up in the judged second half).
        max_rss_growth_mib=512.0,
    )

    result = run_chaos(settings, tmp_path / "run")

    print(f"chaos partitions: {[str(f) for f in result.faults]}: {result.counts_json()}")
    assert result.verdict.passed, summary(result.verdict)
    partitioned = {f.service for f in result.faults if f.kind is FaultKind.PARTITION}
    assert partitioned, "the schedule drew no partition"
    counts = json.loads(result.counts_json())
    assert counts["commands_issued"] == (
        counts["commands_applied"] + counts["commands_pending"] + counts["commands_unapplied"]
    )
    assert counts["events_unaccounted"] == 0
    # A partitioned host went silent for longer than a peer takes to go stale, and came back.
    stale = {peer for _, peer in result.verdict.stale_reports}
    assert partitioned <= stale
    assert result.verdict.counts.peer_recovered >= len(partitioned)
