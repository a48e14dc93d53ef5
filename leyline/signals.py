"""Training signals in two tiers: the fast, tensor-ready record and the rich observation."""

from __future__ import annotations

import enum
import math
from collections import deque
from collections.abc import Iterable
from datetime import datetime
from typing import Annotated

import msgspec

from leyline._types import Count, Finite, Flag, Ident, NonNegative, Percent, Unit, utc_now
from leyline.lifecycle import SeedStage

__all__ = [
    "BEST_VAL_LOSS_CAP",
    "HISTORY_LENGTH",
    "TENSOR_SCHEMA_SIZE",
    "AccuracyHistory",
    "Delta",
    "FastTrainingSignals",
    "HistoryWindow",
    "LossHistory",
    "TensorSchema",
    "TrainingMetrics",
    "TrainingSignals",
]

HISTORY_LENGTH = 5
#: The ceiling on best_val_loss in the fast tier (the spec's clamp), also its "unknown" value.
BEST_VAL_LOSS_CAP = 10.0


class TensorSchema(enum.IntEnum):
    """Index of each feature in the 27-wide observation vector."""

    EPOCH = 0
    GLOBAL_STEP = 1
    TRAIN_LOSS = 2
    VAL_LOSS = 3
    LOSS_DELTA = 4
    TRAIN_ACCURACY = 5
    VAL_ACCURACY = 6
    ACCURACY_DELTA = 7
    PLATEAU_EPOCHS = 8
    BEST_VAL_ACCURACY = 9
    BEST_VAL_LOSS = 10
    LOSS_HIST_0 = 11
    LOSS_HIST_1 = 12
    LOSS_HIST_2 = 13
    LOSS_HIST_3 = 14
    LOSS_HIST_4 = 15
    ACC_HIST_0 = 16
    ACC_HIST_1 = 17
    ACC_HIST_2 = 18
    ACC_HIST_3 = 19
    ACC_HIST_4 = 20
    HAS_ACTIVE_SEED = 21
    SEED_STAGE = 22
    SEED_EPOCHS_IN_STAGE = 23
    SEED_ALPHA = 24
    SEED_IMPROVEMENT = 25
    AVAILABLE_SLOTS = 26


TENSOR_SCHEMA_SIZE = len(TensorSchema)

LossHistory = tuple[NonNegative, NonNegative, NonNegative, NonNegative, NonNegative]
AccuracyHistory = tuple[Percent, Percent, Percent, Percent, Percent]
Delta = Annotated[float, msgspec.Meta(ge=-100.0, le=100.0)]


class FastTrainingSignals(
    msgspec.Struct, array_like=True, gc=False, frozen=True, tag="FastTrainingSignals.v1"
):
    """The hot-path signal of one seed slot for one epoch: numbers only, in schema order.

    Encoded as a msgpack array (no field names), integers as integers, so the worst case
    stays inside the 280-byte budget. Every value is finite and in range on the wire.
    """

    epoch: Count
    global_step: Count
    train_loss: NonNegative
    val_loss: NonNegative
    loss_delta: Finite
    train_accuracy: Percent
    val_accuracy: Percent
    accuracy_delta: Delta
    plateau_epochs: Count
    best_val_accuracy: Percent
    best_val_loss: NonNegative
    loss_history_5: LossHistory
    accuracy_history_5: AccuracyHistory
    has_active_seed: Flag
    seed_stage: SeedStage
    seed_epochs_in_stage: Count
    seed_alpha: Unit
    seed_improvement: Delta
    available_slots: Count
    slot_index: Count = 0

    def to_vector(self) -> list[float]:
        """The 27 raw values in schema order, unsanitised."""
        return [
            float(self.epoch),
            float(self.global_step),
            self.train_loss,
            self.val_loss,
            self.loss_delta,
            self.train_accuracy,
            self.val_accuracy,
            self.accuracy_delta,
            float(self.plateau_epochs),
            self.best_val_accuracy,
            self.best_val_loss,
            *self.loss_history_5,
            *self.accuracy_history_5,
            float(self.has_active_seed),
            float(self.seed_stage),
            float(self.seed_epochs_in_stage),
            self.seed_alpha,
            self.seed_improvement,
            float(self.available_slots),
        ]

    @classmethod
    def empty(cls, slot_index: int = 0) -> FastTrainingSignals:
        """All zeros, one free slot, best loss at its cap (unknown)."""
        zeros = (0.0, 0.0, 0.0, 0.0, 0.0)
        return cls(
            0, 0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0, 0.0, BEST_VAL_LOSS_CAP, zeros, zeros,
            0, SeedStage.UNKNOWN, 0, 0.0, 0.0, 1, slot_index,
        )  # fmt: skip


class HistoryWindow:
    """The last `HISTORY_LENGTH` values, oldest first, zero-padded on the left in O(1)."""

    __slots__ = ("_values",)

    def __init__(self, values: Iterable[float] = ()) -> None:
        self._values: deque[float] = deque(values, maxlen=HISTORY_LENGTH)

    def append(self, value: float) -> None:
        self._values.append(value)

    def snapshot(self) -> tuple[float, float, float, float, float]:
        padded = (0.0,) * (HISTORY_LENGTH - len(self._values)) + tuple(self._values)
        return padded  # type: ignore[return-value]  # length is HISTORY_LENGTH by construction


def _padded(history: list[float]) -> tuple[float, float, float, float, float]:
    return HistoryWindow(history[-HISTORY_LENGTH:]).snapshot()


class TrainingMetrics(msgspec.Struct, kw_only=True):
    """Schema entries 0-10 for one epoch, plus the gradient norms that stay out of the vector."""

    epoch: Count = 0
    global_step: Count = 0
    train_loss: NonNegative = 0.0
    val_loss: NonNegative = 0.0
    loss_delta: Finite = 0.0
    train_accuracy: Percent = 0.0
    val_accuracy: Percent = 0.0
    accuracy_delta: Delta = 0.0
    plateau_epochs: Count = 0
    best_val_accuracy: Percent = 0.0
    best_val_loss: NonNegative = BEST_VAL_LOSS_CAP
    grad_norm_host: NonNegative = 0.0
    grad_norm_seed: NonNegative = 0.0


def _finite_or(value: float, fallback: float) -> float:
    return value if math.isfinite(value) else fallback


class TrainingSignals(msgspec.Struct, kw_only=True, tag="TrainingSignals.v1"):
    """The controller's full observation of one worker for one epoch."""

    metrics: TrainingMetrics = msgspec.field(default_factory=TrainingMetrics)
    active_seeds: list[Ident] = msgspec.field(default_factory=list)
    available_slots: Count = 0
    seed_stage: SeedStage = SeedStage.UNKNOWN
    seed_epochs_in_stage: Count = 0
    seed_alpha: Unit = 0.0
    seed_improvement: Delta = 0.0
    gpu_memory_used: NonNegative = 0.0
    gpu_utilization: Unit = 0.0
    loss_history: list[NonNegative] = msgspec.field(default_factory=list)
    accuracy_history: list[Percent] = msgspec.field(default_factory=list)
    epoch_duration_ms: NonNegative = 0.0
    timestamp: datetime = msgspec.field(default_factory=utc_now)

    def to_fast(
        self,
        seed_stage: SeedStage | None = None,
        seed_epochs_in_stage: int | None = None,
        seed_alpha: float | None = None,
        seed_improvement: float | None = None,
        slot_index: int = 0,
    ) -> FastTrainingSignals:
        """The fast tier: seed arguments override the stored fields, histories keep the last 5.

        Non-finite loss delta (the first epoch's +inf) becomes 0 and best loss is capped at
        `BEST_VAL_LOSS_CAP`, so the result is always valid on the wire.
        """
        m = self.metrics
        return FastTrainingSignals(
            m.epoch,
            m.global_step,
            m.train_loss,
            m.val_loss,
            _finite_or(m.loss_delta, 0.0),
            m.train_accuracy,
            m.val_accuracy,
            m.accuracy_delta,
            m.plateau_epochs,
            m.best_val_accuracy,
            min(_finite_or(m.best_val_loss, BEST_VAL_LOSS_CAP), BEST_VAL_LOSS_CAP),
            _padded(self.loss_history),
            _padded(self.accuracy_history),
            1 if self.active_seeds else 0,
            self.seed_stage if seed_stage is None else seed_stage,
            self.seed_epochs_in_stage if seed_epochs_in_stage is None else seed_epochs_in_stage,
            self.seed_alpha if seed_alpha is None else seed_alpha,
            self.seed_improvement if seed_improvement is None else seed_improvement,
            self.available_slots,
            slot_index,
        )
