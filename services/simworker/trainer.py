"""Epochs without training: a drifting learning curve instead of the digits set.

`SimulatedTrainer` is the real `Trainer` with its two torch passes replaced, so everything
an epoch publishes (the tracker's metrics, the slots' lifecycle clock and gates, the fast
signals, seed telemetry, epoch and plateau events, state reports) is built by the same code
a training worker runs. The curve rises towards a ceiling and flattens, so the controller
sees plateaus and germinates; a live seed then moves validation accuracy by its own gain as
it blends in, so some seeds earn fossilization and some are culled.
"""

from __future__ import annotations

import functools
import math
import random

import torch

from leyline import SeedStage
from services.worker.data import DataSplit
from services.worker.model import WorkerModel
from services.worker.trainer import Trainer

#: Optimiser steps one simulated epoch stands for (the digits set at batch 64: 23).
STEPS_PER_EPOCH = 23
#: Stages whose seed takes part in the forward pass, and so moves accuracy.
_BLENDED = frozenset(
    {SeedStage.BLENDING, SeedStage.SHADOWING, SeedStage.PROBATIONARY, SeedStage.FOSSILIZED}
)


@functools.cache
def no_data() -> DataSplit:
    """An empty split, shared: a simulated trainer never reads a batch."""
    images, labels = torch.empty(0, 1, 8, 8), torch.empty(0, dtype=torch.long)
    return DataSplit(images, labels, images, labels)


class SimulatedTrainer(Trainer):
    """A `Trainer` whose epochs follow a seeded curve: accuracy rises to a ceiling with noise."""

    def __init__(self, model: WorkerModel, seed: int) -> None:
        super().__init__(model, no_data())
        self.rng = random.Random(seed)
        self.ceiling = self.rng.uniform(82.0, 96.0)
        self.rate = self.rng.uniform(0.25, 0.6)
        #: Each seed's effect on accuracy at full alpha, drawn when it first blends in.
        self.gains: dict[str, float] = {}

    def _host_accuracy(self, epoch: int) -> float:
        return self.ceiling * (1.0 - math.exp(-self.rate * epoch))

    def _seed_gain(self) -> float:
        gain = 0.0
        for slot in self.model.slots.values():
            if slot.stage in _BLENDED and slot.is_occupied:
                drawn = self.gains.setdefault(slot.seed_id, self.rng.uniform(-4.0, 5.0))
                gain += drawn * slot.alpha
        return gain

    def train_epoch(self) -> tuple[float, float]:
        """(loss, accuracy %) of the curve at this epoch, over `STEPS_PER_EPOCH` steps."""
        epoch = self.model.epoch + 1
        accuracy = min(99.5, self._host_accuracy(epoch) + 2.0 + self.rng.gauss(0.0, 0.4))
        self.clock.global_step += STEPS_PER_EPOCH
        return _loss(accuracy), accuracy

    def evaluate(self) -> tuple[float, float]:
        """Validation (loss, accuracy %): the curve, the live seeds' gains, and noise."""
        epoch = self.model.epoch + 1
        accuracy = self._host_accuracy(epoch) + self._seed_gain() + self.rng.gauss(0.0, 0.3)
        accuracy = max(0.0, min(100.0, accuracy))
        return _loss(accuracy) + self.rng.uniform(0.0, 0.05), accuracy


def _loss(accuracy: float) -> float:
    """Cross-entropy that falls as accuracy rises (2.3 = chance on ten classes)."""
    return 2.3 * math.pow(1.0 - accuracy / 100.0, 1.5) + 0.02
