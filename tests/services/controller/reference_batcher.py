"""The batcher's rules written plainly, one signal at a time with dicts: what the array
batcher (`SignalBatcher`) must agree with (a plain module: test files import it by name)."""

from __future__ import annotations

import numpy as np

Key = tuple[str, str]


class ReferenceBatcher:
    """Freshest wins per (worker, slot); a signal no newer than the pending or the last
    decided one is stale; a newer one keeps the pending one's place and arrival time."""

    def __init__(self, max_batch: int, max_wait_s: float) -> None:
        self.max_batch, self.max_wait_s = max_batch, max_wait_s
        self.pending: dict[Key, tuple[int, float]] = {}  # in arrival order
        self.decided: dict[Key, int] = {}
        self.rows: dict[Key, int] = {}
        self.features: dict[Key, np.ndarray] = {}
        self.accepted = self.conflated = self.stale = 0

    def submit(self, key: Key, epoch: int, features: np.ndarray, now: float) -> bool:
        self.rows.setdefault(key, len(self.rows))
        if key in self.decided and epoch <= self.decided[key]:
            self.stale += 1
            return False
        held = self.pending.get(key)
        if held is not None and epoch < held[0]:
            self.stale += 1
            return False
        if held is not None:
            self.conflated += 1
        self.pending[key] = (epoch, now if held is None else held[1])
        self.features[key] = features
        self.accepted += 1
        return True

    def deadline(self) -> float | None:
        oldest = next(iter(self.pending.values()), None)
        return None if oldest is None else oldest[1] + self.max_wait_s

    def take(self, now: float, force: bool) -> list[tuple[str, str, int, float, int]]:
        deadline = self.deadline()
        ready = len(self.pending) >= self.max_batch or (deadline is not None and now >= deadline)
        if not (force or ready):
            return []
        keys = list(self.pending)[: self.max_batch]
        taken = []
        for key in keys:
            epoch, arrived = self.pending.pop(key)
            self.decided[key] = epoch
            taken.append((key[0], key[1], epoch, arrived, self.rows[key]))
        return taken

    def forget(self, worker: str) -> None:
        for key in [k for k in self.rows if k[0] == worker]:
            self.pending.pop(key, None)
            self.decided.pop(key, None)
