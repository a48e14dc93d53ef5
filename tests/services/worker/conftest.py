"""Fixtures for the worker tests: the digits split once per session, fresh models and slots."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from leyline import LifecycleGuard
from services.worker import DataSplit, SeedSlot, Trainer, WorkerModel, load_digits_split


@pytest.fixture(scope="session")
def digits() -> DataSplit:
    return load_digits_split(seed=0)


@pytest.fixture
def model() -> WorkerModel:
    return WorkerModel("w1")


@pytest.fixture
def make_trainer(digits: DataSplit) -> Callable[[], Trainer]:
    return lambda: Trainer(WorkerModel("w1"), digits)


@pytest.fixture
def slot() -> SeedSlot:
    """A free-standing slot on 4 channels with the default lifecycle."""
    torch.manual_seed(0)
    return SeedSlot("block2_post", 4, worker_id="w1", guard=LifecycleGuard())
