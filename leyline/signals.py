"""Training signals in two tiers: the fast, tensor-ready record and the rich observation."""

from __future__ import annotations

import enum
import math
import struct
from collections import deque
from collections.abc import Iterable
from datetime import datetime
from typing import Annotated, Any

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

#: The feature block of `FastTrainingSignals` v2: the 27 `TensorSchema` values in schema
#: order, each a little-endian IEEE float32, 108 bytes. The one definition of the layout.
FEATURE_BLOCK = struct.Struct(f"<{TENSOR_SCHEMA_SIZE}f")
FeatureBlock = Annotated[
    bytes, msgspec.Meta(min_length=FEATURE_BLOCK.size, max_length=FEATURE_BLOCK.size)
]
_FLOAT32_MAX = float(struct.unpack("<f", b"\xff\xff\x7f\x7f")[0])


class FastTrainingSignalsV1(
    msgspec.Struct, array_like=True, gc=False, frozen=True, tag="FastTrainingSignals.v1"
):
    """The v1 contract, one field per feature: read to be lifted to v2, and the named view.

    Every value is checked at decode time by its type. `FastTrainingSignals.named()` gives
    a v2 signal's values in this form; `lift()` packs one into v2.
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

    def lift(self) -> FastTrainingSignals:
        """The v2 signal of these values (the registry's upgrade of a v1 message)."""
        return FastTrainingSignals(self.epoch, pack_features(self.to_vector()), self.slot_index)


def pack_features(values: list[float]) -> bytes:
    """The feature block of 27 raw values; a finite value beyond float32 becomes its bound.

    A float64 value past float32's range would otherwise round to an infinity, which the
    receiver refuses; its bound normalises to the same model input. -0.0 is written as 0.0.
    """
    try:
        return FEATURE_BLOCK.pack(*[v + 0.0 for v in values])
    except OverflowError:
        bound = _FLOAT32_MAX
        return FEATURE_BLOCK.pack(
            *[min(max(v, -bound), bound) if math.isfinite(v) else v for v in values]
        )


class FastTrainingSignals(
    msgspec.Struct, array_like=True, gc=False, frozen=True, tag="FastTrainingSignals.v2"
):
    """The hot-path signal of one seed slot for one epoch, tensor-ready.

    `features` is the model input before normalisation: the 27 `TensorSchema` values as one
    fixed-layout float32 block (`FEATURE_BLOCK`), so a batch becomes a tensor by joining
    blocks, with no per-field Python. Decoding checks the block's length only; its values
    (finite, in each feature's range, integers where the feature counts) are checked for a
    whole batch at once by `leyline.features.check_rows`, which refuses a bad row by name.
    `epoch` (the same value as `features[EPOCH]`, as `of` writes it) orders a slot's signals
    for freshness and is checked at decode like any v1 field.
    """

    epoch: Count
    features: FeatureBlock
    slot_index: Count = 0

    @classmethod
    def of(
        cls,
        epoch: int,
        global_step: int,
        train_loss: float,
        val_loss: float,
        loss_delta: float,
        train_accuracy: float,
        val_accuracy: float,
        accuracy_delta: float,
        plateau_epochs: int,
        best_val_accuracy: float,
        best_val_loss: float,
        loss_history_5: tuple[float, float, float, float, float],
        accuracy_history_5: tuple[float, float, float, float, float],
        has_active_seed: int,
        seed_stage: SeedStage,
        seed_epochs_in_stage: int,
        seed_alpha: float,
        seed_improvement: float,
        available_slots: int,
        slot_index: int = 0,
    ) -> FastTrainingSignals:
        """The signal of these values, in v1's field order (v1's named fields, packed)."""
        return FastTrainingSignalsV1(
            epoch, global_step, train_loss, val_loss, loss_delta, train_accuracy,
            val_accuracy, accuracy_delta, plateau_epochs, best_val_accuracy, best_val_loss,
            loss_history_5, accuracy_history_5, has_active_seed, seed_stage,
            seed_epochs_in_stage, seed_alpha, seed_improvement, available_slots, slot_index,
        ).lift()  # fmt: skip

    def to_vector(self) -> list[float]:
        """The 27 raw values in schema order, as the block holds them (float32), unchecked."""
        return list(FEATURE_BLOCK.unpack(self.features))

    def named(self) -> FastTrainingSignalsV1:
        """The values by name, integers as integers and the stage as a `SeedStage`.

        For readers that want a field, not the model (tests, tools). Only for a signal whose
        values passed `check_rows` (or that `of` wrote): it does not check them.
        """
        v = self.to_vector()
        f = TensorSchema
        return FastTrainingSignalsV1(
            int(v[f.EPOCH]), int(v[f.GLOBAL_STEP]), v[f.TRAIN_LOSS], v[f.VAL_LOSS],
            v[f.LOSS_DELTA], v[f.TRAIN_ACCURACY], v[f.VAL_ACCURACY], v[f.ACCURACY_DELTA],
            int(v[f.PLATEAU_EPOCHS]), v[f.BEST_VAL_ACCURACY], v[f.BEST_VAL_LOSS],
            tuple(v[f.LOSS_HIST_0 : f.LOSS_HIST_4 + 1]),  # type: ignore[arg-type]
            tuple(v[f.ACC_HIST_0 : f.ACC_HIST_4 + 1]),  # type: ignore[arg-type]
            int(v[f.HAS_ACTIVE_SEED]), SeedStage(int(v[f.SEED_STAGE])),
            int(v[f.SEED_EPOCHS_IN_STAGE]), v[f.SEED_ALPHA], v[f.SEED_IMPROVEMENT],
            int(v[f.AVAILABLE_SLOTS]), self.slot_index,
        )  # fmt: skip

    def with_values(self, **changes: Any) -> FastTrainingSignals:
        """This signal with some named values changed (v1's field names), packed again."""
        return msgspec.structs.replace(self.named(), **changes).lift()

    @classmethod
    def empty(cls, slot_index: int = 0) -> FastTrainingSignals:
        """All zeros, one free slot, best loss at its cap (unknown)."""
        zeros = (0.0, 0.0, 0.0, 0.0, 0.0)
        return cls.of(
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
        return FastTrainingSignals.of(
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
