"""The memory bound leaves a slow start-up out and still catches a process that leaks."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest

from services.chaos import MemoryWatch
from services.chaos.memory import always_settled

#: A child that holds one more MiB (touched, so resident) for each line it reads.
GROWER = """
import sys
held = []
for line in sys.stdin:
    for _ in range(int(line)):
        held.append(bytearray(b"x" * (1 << 20)))
    print("ok", flush=True)
"""

BOUND_MIB = 16.0


@pytest.fixture
def grower() -> Iterator[subprocess.Popen[str]]:
    child = subprocess.Popen(
        [sys.executable, "-c", GROWER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    yield child
    child.kill()
    child.wait()


def grow(child: subprocess.Popen[str], mib: int) -> None:
    """Let `child` allocate `mib` MiB and wait until it has."""
    assert child.stdin is not None and child.stdout is not None
    child.stdin.write(f"{mib}\n")
    child.stdin.flush()
    assert child.stdout.readline() == "ok\n"


def watch_life(child: subprocess.Popen[str], steps: list[tuple[int, bool]]) -> MemoryWatch:
    """Sample `child` once after each (MiB to allocate, past start-up?) step."""
    watch = MemoryWatch(min_samples=20)
    for mib, settled in steps:
        grow(child, mib)
        watch.sample({"w1": child.pid}, always_settled if settled else never)
    return watch


def never(service: str) -> bool:
    return False


def test_start_up_reaching_past_the_middle_of_the_life_is_not_growth(
    grower: subprocess.Popen[str],
) -> None:
    # A starved worker: 48 samples of start-up growing 96 MiB, then 24 flat steady ones.
    watch = watch_life(grower, [(2, False)] * 48 + [(0, True)] * 24)

    assert [p.service for p in watch.judged()] == ["w1"]
    assert watch.violations(BOUND_MIB, 4096.0) == []


def test_a_process_that_keeps_growing_after_start_up_is_caught(
    grower: subprocess.Popen[str],
) -> None:
    # The same start-up, then 1 MiB held per steady sample: 24 MiB in the second half.
    watch = watch_life(grower, [(2, False)] * 48 + [(1, True)] * 48)

    (line,) = watch.violations(BOUND_MIB, 4096.0)
    assert line.startswith(f"w1 (pid {grower.pid}) grew ")


def test_a_process_never_past_start_up_is_not_judged(grower: subprocess.Popen[str]) -> None:
    watch = watch_life(grower, [(1, False)] * 40)

    assert watch.judged() == []
    assert watch.violations(BOUND_MIB, 4096.0) == []
