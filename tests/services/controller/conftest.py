"""Fixtures for the controller's decision core: the CNN action layout and signal builders."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec
import pytest

from leyline import FastTrainingSignals, SeedStage
from services.controller import ActionLayout

SignalFactory = Callable[..., FastTrainingSignals]


def make_signal(**fields: Any) -> FastTrainingSignals:
    """An empty-slot signal with `fields` replaced; a live stage implies an active seed."""
    stage = SeedStage(fields.get("seed_stage", SeedStage.DORMANT))
    fields.setdefault("seed_stage", stage)
    fields.setdefault(
        "has_active_seed", 0 if stage in (SeedStage.UNKNOWN, SeedStage.DORMANT) else 1
    )
    return msgspec.structs.replace(FastTrainingSignals.empty(), **fields)


@pytest.fixture
def layout() -> ActionLayout:
    return ActionLayout("cnn")


@pytest.fixture
def signal() -> SignalFactory:
    return make_signal
