"""Resident memory of the service processes, sampled during a run, and its bound."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import msgspec


def rss_kib(pid: int) -> int | None:
    """VmRSS of `pid` in KiB; None when the process is gone (or not on Linux)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return None


def always_settled(service: str) -> bool:
    """For processes that say nothing about their start-up: every sample is steady state."""
    return True


class ProcessMemory(msgspec.Struct, kw_only=True):
    """The RSS samples of one process (one incarnation of a service), oldest first."""

    service: str
    pid: int
    samples_kib: list[int] = msgspec.field(default_factory=list)
    #: Index of the first sample taken once the process was past its start-up; None before.
    settled_at: int | None = None

    @property
    def peak_kib(self) -> int:
        return max(self.samples_kib, default=0)

    @property
    def steady_kib(self) -> list[int]:
        """The samples taken after start-up (none while the process has not settled)."""
        return [] if self.settled_at is None else self.samples_kib[self.settled_at :]

    @property
    def growth_kib(self) -> int:
        """RSS at the last steady sample minus RSS at the middle one: the steady-state growth.

        Start-up (importing torch, the first batches, page cache) is left out by when the
        process settled, not by where the middle sample falls: on a loaded machine a worker's
        start-up takes tens of seconds and reaches past the middle of a short life. What a
        leak or an unbounded queue shows is growth in the second half of the steady life.
        """
        steady = self.steady_kib
        return steady[-1] - steady[len(steady) // 2] if steady else 0


class MemoryWatch:
    """Samples the RSS of named processes; judges the ones that lived long enough settled."""

    def __init__(self, min_samples: int = 80) -> None:
        self.min_samples = min_samples
        self.processes: dict[int, ProcessMemory] = {}

    def sample(self, pids: dict[str, int], settled: Callable[[str], bool] = always_settled) -> None:
        """One RSS sample per process; `settled(service)` says whether its start-up is over."""
        for service, pid in pids.items():
            kib = rss_kib(pid)
            if kib is None:
                continue
            record = self.processes.get(pid)
            if record is None:
                record = self.processes[pid] = ProcessMemory(service=service, pid=pid)
            if record.settled_at is None and settled(service):
                record.settled_at = len(record.samples_kib)
            record.samples_kib.append(kib)

    def judged(self) -> list[ProcessMemory]:
        """The processes sampled often enough after start-up for their growth to mean something."""
        return [p for p in self.processes.values() if len(p.steady_kib) >= self.min_samples]

    def peak_mib(self) -> dict[str, float]:
        """The highest RSS seen per service, in MiB."""
        peaks: dict[str, float] = {}
        for record in self.processes.values():
            peaks[record.service] = max(peaks.get(record.service, 0.0), record.peak_kib / 1024)
        return dict(sorted(peaks.items()))

    def violations(self, max_growth_mib: float, max_rss_mib: float) -> list[str]:
        """One line per process above `max_rss_mib`, or whose steady-state growth (judged
        processes only) exceeded `max_growth_mib`."""
        found = [
            f"{p.service} (pid {p.pid}) grew {p.growth_kib / 1024:.1f} MiB in the second half "
            f"of its life after start-up (bound {max_growth_mib:g} MiB)"
            for p in self.judged()
            if p.growth_kib > max_growth_mib * 1024
        ]
        found.extend(
            f"{p.service} (pid {p.pid}) reached {p.peak_kib / 1024:.0f} MiB "
            f"(bound {max_rss_mib:g} MiB)"
            for p in self.processes.values()
            if p.peak_kib > max_rss_mib * 1024
        )
        return found
