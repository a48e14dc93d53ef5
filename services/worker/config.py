"""Worker-side settings: the lifecycle's clocks and the trainer's knobs, as validated data."""

from __future__ import annotations

import math
from typing import Annotated, Literal

import msgspec

from leyline.gates import DEFAULT_GATE_THRESHOLDS, GateThresholds

PositiveInt = Annotated[int, msgspec.Meta(ge=1)]
Fraction = Annotated[float, msgspec.Meta(gt=0.0, le=1.0)]
Rate = Annotated[float, msgspec.Meta(gt=0.0, le=10.0)]


class LifecycleConfig(msgspec.Struct, frozen=True, kw_only=True):
    """How long each stage dwells, how blending ramps and how long a culled slot cools off."""

    max_epochs: PositiveInt = 25
    train_to_blend_fraction: Fraction = 0.1
    shadowing_fraction: Fraction = 0.1
    blending_steps: PositiveInt = 5
    embargo_epochs: PositiveInt = 3
    thresholds: GateThresholds = DEFAULT_GATE_THRESHOLDS

    @property
    def training_dwell(self) -> int:
        """Epochs in TRAINING before G2 is tried: max(1, floor(max_epochs x fraction))."""
        return max(1, math.floor(self.max_epochs * self.train_to_blend_fraction))

    @property
    def shadowing_dwell(self) -> int:
        """Epochs in SHADOWING before G4 is tried, by the same formula."""
        return max(1, math.floor(self.max_epochs * self.shadowing_fraction))


class TrainingConfig(msgspec.Struct, frozen=True, kw_only=True):
    """The trainer's data, model and optimiser settings; `seed` fixes every random choice.

    `topology` picks the host: `cnn` (digits, `channels`) or `transformer` (generated text,
    `width` and `context`).
    """

    seed: int = 0
    topology: Literal["cnn", "transformer"] = "cnn"
    batch_size: PositiveInt = 64
    val_fraction: Fraction = 0.2
    channels: tuple[PositiveInt, PositiveInt, PositiveInt] = (16, 32, 64)
    width: PositiveInt = 64
    context: PositiveInt = 32
    optimizer: Literal["adam", "sgd"] = "adam"
    learning_rate: Rate = 3e-3
    seed_learning_rate: Rate = 3e-3
    momentum: Annotated[float, msgspec.Meta(ge=0.0, lt=1.0)] = 0.9
