"""Checkpoints: an atomic file, and what a checkpointable piece of training state offers."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Protocol

import torch


class Stateful(Protocol):
    """Anything with torch's state-dict pair: a module, an optimiser, a scheduler, a loop."""

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> Any: ...


class Checkpoint:
    """An atomic checkpoint file: written beside, fsynced, then renamed over the old one."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)

    def save(self, state: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_suffix(".partial")
        with partial.open("wb") as file:
            torch.save(state, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(partial, self.path)

    def load(self) -> dict[str, Any] | None:
        if not self.path.is_file():
            return None
        state: dict[str, Any] = torch.load(self.path, weights_only=True)
        return state
