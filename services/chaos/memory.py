"""Resident memory of the service processes, sampled during a run, and its bound."""

from __future__ import annotations

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


class ProcessMemory(msgspec.Struct, kw_only=True):
    """The RSS samples of one process (one incarnation of a service), oldest first."""

    service: str
    pid: int
    samples_kib: list[int] = msgspec.field(default_factory=list)

    @property
    def peak_kib(self) -> int:
        return max(self.samples_kib, default=0)

    @property
    def growth_kib(self) -> int:
        """RSS at the last sample minus RSS at the middle one: the steady-state growth.

        The first half is start-up (imports, first batches, page cache); what a leak or an
        unbounded queue would show is growth in the second half of a long life.
        """
        samples = self.samples_kib
        return samples[-1] - samples[len(samples) // 2] if samples else 0


class MemoryWatch:
    """Samples the RSS of named processes; judges the ones that lived long enough."""

    def __init__(self, min_samples: int = 80) -> None:
        self.min_samples = min_samples
        self.processes: dict[int, ProcessMemory] = {}

    def sample(self, pids: dict[str, int]) -> None:
        for service, pid in pids.items():
            kib = rss_kib(pid)
            if kib is None:
                continue
            record = self.processes.get(pid)
            if record is None:
                record = self.processes[pid] = ProcessMemory(service=service, pid=pid)
            record.samples_kib.append(kib)

    def judged(self) -> list[ProcessMemory]:
        """The processes sampled often enough for their growth to mean something."""
        return [p for p in self.processes.values() if len(p.samples_kib) >= self.min_samples]

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
            f"of its life (bound {max_growth_mib:g} MiB)"
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
