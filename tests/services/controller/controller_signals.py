"""Signal builders for the controller tests (a plain module: test files import it by name)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from leyline import FastTrainingSignals, SeedStage

SignalFactory = Callable[..., FastTrainingSignals]


def make_signal(**fields: Any) -> FastTrainingSignals:
    """An empty-slot signal with `fields` replaced; a live stage implies an active seed."""
    stage = SeedStage(fields.get("seed_stage", SeedStage.DORMANT))
    fields.setdefault("seed_stage", stage)
    empty = stage in (SeedStage.UNKNOWN, SeedStage.DORMANT)
    fields.setdefault("has_active_seed", 0 if empty else 1)
    return FastTrainingSignals.empty().with_values(**fields)
