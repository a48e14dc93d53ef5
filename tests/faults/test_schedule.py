"""Fault schedules: seeded, of the kinds asked for, partitions held long enough to drop links."""

from __future__ import annotations

import random

import pytest

from services.chaos import ChaosSettings, FaultKind, random_schedule
from services.chaos.schedule import LOCAL_KINDS
from services.cli import main

WORKERS = ["w1", "w2"]


def test_a_local_schedule_draws_no_partition_and_is_the_same_for_a_seed() -> None:
    first = random_schedule(50, WORKERS, random.Random(7))
    assert {fault.kind for fault in first} == set(LOCAL_KINDS)
    assert first == random_schedule(50, WORKERS, random.Random(7))


def test_partitions_are_held_for_their_own_span_on_every_role() -> None:
    faults = random_schedule(
        60, WORKERS, random.Random(1), kinds=tuple(FaultKind), partition_s=(5.0, 30.0)
    )
    partitions = [fault for fault in faults if fault.kind is FaultKind.PARTITION]
    assert partitions and all(5.0 <= fault.hold_s <= 30.0 for fault in partitions)
    assert {fault.service for fault in partitions} == {"sink", "controller", *WORKERS}
    others = [fault for fault in faults if fault.kind is not FaultKind.PARTITION]
    assert all(fault.hold_s <= 2.5 for fault in others)


def test_partitions_need_namespace_hosts() -> None:
    with pytest.raises(ValueError, match="namespace"):
        ChaosSettings(kinds=(FaultKind.PARTITION,))
    with pytest.raises(ValueError, match="no fault kind"):
        random_schedule(1, WORKERS, random.Random(0), kinds=())


def test_the_chaos_command_refuses_partitions_without_namespaces(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["chaos", "--faults", "1", "--fault", "partition"]) == 2
    assert "--fault partition needs --namespaces" in capsys.readouterr().err
