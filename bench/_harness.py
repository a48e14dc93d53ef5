"""Shared timing: warmed-up loops of `time.perf_counter_ns`, repeated and interleaved.

Each candidate is called in a plain loop long enough to dwarf the clock's resolution; the
repeats of all candidates interleave, so a neighbour's burst of load on this shared machine
slows every candidate alike rather than one. The best repeat is the figure (the least
disturbed run), the median says how noisy it was. Garbage collection is paused while timing,
as `timeit` does. Loop overhead (~30 ns a call) is included for every candidate alike.
"""

from __future__ import annotations

import gc
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

#: The shortest timed loop; long enough that clock resolution and call jitter vanish.
MIN_LOOP_NS = 1_000_000


@dataclass(frozen=True)
class Timing:
    """The cost of one call of a candidate, in nanoseconds."""

    best_ns: float
    median_ns: float
    loops: int

    @property
    def per_s(self) -> float:
        """Calls per second at the best time."""
        return 1e9 / self.best_ns

    @property
    def best_us(self) -> float:
        return self.best_ns / 1e3


def progress(message: str) -> None:
    """A human-readable progress line, on stderr so that stdout carries only the figures."""
    print(message, file=sys.stderr, flush=True)


def measure(*candidates: Callable[[], object], repeats: int = 31) -> list[Timing]:
    """The per-call time of each candidate, from `repeats` interleaved timed loops each."""
    loops = [_calibrate(candidate) for candidate in candidates]
    samples: list[list[float]] = [[] for _ in candidates]
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for _ in range(repeats):
            for candidate, count, times in zip(candidates, loops, samples, strict=True):
                times.append(_timed_loop(candidate, count) / count)
    finally:
        if gc_was_enabled:
            gc.enable()
    return [
        Timing(min(times), statistics.median(times), count)
        for count, times in zip(loops, samples, strict=True)
    ]


def ratio(ceiling: Timing, ours: Timing) -> float:
    """ceiling time / our time: 1.0 is as fast as the ceiling, 0.5 twice as slow."""
    return round(ceiling.best_ns / ours.best_ns, 4)


def _calibrate(candidate: Callable[[], object]) -> int:
    """Warm the candidate up and find a loop count that runs for at least `MIN_LOOP_NS`."""
    count = 1
    while True:
        elapsed = _timed_loop(candidate, count)
        if elapsed >= MIN_LOOP_NS:
            return count
        count = max(count * 2, int(count * MIN_LOOP_NS * 1.2 / max(elapsed, 1)))


def _timed_loop(candidate: Callable[[], object], count: int) -> int:
    start = time.perf_counter_ns()
    for _ in range(count):
        candidate()
    return time.perf_counter_ns() - start
