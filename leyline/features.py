"""Model-input normalisation: every `TensorSchema` feature mapped into a fixed, bounded range.

Each feature is divided by a scale (a declared bound, or a constant such as 100 for percent)
and clipped to [0, 1], or to [-1, 1] for the signed deltas. Non-finite values are replaced
deterministically: +inf by the upper bound, -inf by the lower bound (the clip does both), NaN
by the feature's neutral value. numpy only: the torch side lives in `leyline.tensors`.
"""

from __future__ import annotations

import functools
import math
import struct
from collections.abc import Sequence
from typing import NamedTuple, TypeVar

import msgspec
import numpy as np
import numpy.typing as npt

from leyline.lifecycle import SeedStage
from leyline.signals import TENSOR_SCHEMA_SIZE, FastTrainingSignals, TensorSchema

__all__ = [
    "DEFAULT_BOUNDS",
    "DoubleArray",
    "FeatureBounds",
    "FeatureNormaliser",
    "FeatureTransform",
    "FloatArray",
    "RawArray",
    "feature_transforms",
    "features_markdown",
    "normalise_into",
    "normaliser_for",
    "write_raw",
]

FloatArray = npt.NDArray[np.float32]
DoubleArray = npt.NDArray[np.float64]
RawArray = TypeVar("RawArray", FloatArray, DoubleArray)


class FeatureBounds(msgspec.Struct, frozen=True, kw_only=True):
    """The declared bounds that scale the unbounded features; every one positive and finite."""

    max_epochs: int = 25
    max_steps: int = 10_000
    loss_cap: float = 10.0
    loss_delta_cap: float = 1.0
    accuracy_delta_cap: float = 10.0
    plateau_cap: int = 10
    epochs_in_stage_cap: int = 50
    improvement_cap: float = 10.0
    available_slots_cap: int = 4

    def __post_init__(self) -> None:
        for name in self.__struct_fields__:
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be positive and finite, got {value!r}")


DEFAULT_BOUNDS = FeatureBounds()


class FeatureTransform(NamedTuple):
    """How one feature is normalised: `clip(x / scale, low, 1)`, NaN becoming `nan_value`."""

    feature: TensorSchema
    raw_range: str
    scale_name: str
    scale: float
    signed: bool
    nan_value: float

    @property
    def low(self) -> float:
        return -1.0 if self.signed else 0.0

    @property
    def high(self) -> float:
        return 1.0


def _transform(
    feature: TensorSchema,
    raw_range: str,
    scale_name: str,
    scale: float,
    *,
    signed: bool = False,
    nan_value: float = 0.0,
) -> FeatureTransform:
    return FeatureTransform(feature, raw_range, scale_name, float(scale), signed, nan_value)


def feature_transforms(bounds: FeatureBounds = DEFAULT_BOUNDS) -> tuple[FeatureTransform, ...]:
    """The transform of every feature, in schema order, with the scales `bounds` declares.

    NaN means "unknown": a loss becomes its cap (as bad as it gets), everything else its
    neutral zero (no progress, no change, no seed, no free slot).
    """
    b = bounds
    f = TensorSchema
    stage_max = max(SeedStage)
    loss = ("loss_cap", b.loss_cap)
    percent = ("100", 100.0)
    transforms = [
        _transform(f.EPOCH, ">= 0, unbounded", "max_epochs", b.max_epochs),
        _transform(f.GLOBAL_STEP, ">= 0, unbounded", "max_steps", b.max_steps),
        _transform(f.TRAIN_LOSS, ">= 0, unbounded", *loss, nan_value=1.0),
        _transform(f.VAL_LOSS, ">= 0, unbounded", *loss, nan_value=1.0),
        _transform(
            f.LOSS_DELTA, "any, + is better", "loss_delta_cap", b.loss_delta_cap, signed=True
        ),
        _transform(f.TRAIN_ACCURACY, "0 .. 100 %", *percent),
        _transform(f.VAL_ACCURACY, "0 .. 100 %", *percent),
        _transform(
            f.ACCURACY_DELTA,
            "-100 .. 100 pp",
            "accuracy_delta_cap",
            b.accuracy_delta_cap,
            signed=True,
        ),
        _transform(f.PLATEAU_EPOCHS, ">= 0, unbounded", "plateau_cap", b.plateau_cap),
        _transform(f.BEST_VAL_ACCURACY, "0 .. 100 %", *percent),
        _transform(f.BEST_VAL_LOSS, ">= 0, 10 when unknown", *loss, nan_value=1.0),
        *(
            _transform(f[f"LOSS_HIST_{i}"], ">= 0, unbounded", *loss, nan_value=1.0)
            for i in range(5)
        ),
        *(_transform(f[f"ACC_HIST_{i}"], "0 .. 100 %", *percent) for i in range(5)),
        _transform(f.HAS_ACTIVE_SEED, "0 or 1", "1", 1.0),
        _transform(f.SEED_STAGE, f"SeedStage 0 .. {stage_max:d}", f"{stage_max:d}", stage_max),
        _transform(
            f.SEED_EPOCHS_IN_STAGE, ">= 0, unbounded", "epochs_in_stage_cap", b.epochs_in_stage_cap
        ),
        _transform(f.SEED_ALPHA, "0 .. 1", "1", 1.0),
        _transform(
            f.SEED_IMPROVEMENT, "-100 .. 100 pp", "improvement_cap", b.improvement_cap, signed=True
        ),
        _transform(f.AVAILABLE_SLOTS, ">= 0 slots", "available_slots_cap", b.available_slots_cap),
    ]
    return tuple(transforms)


class FeatureNormaliser:
    """One set of bounds as per-feature columns, applied to whole [B, 27] batches at once."""

    __slots__ = ("_high", "_low", "_nan", "_scale", "bounds")

    def __init__(self, bounds: FeatureBounds = DEFAULT_BOUNDS) -> None:
        transforms = feature_transforms(bounds)
        self.bounds = bounds
        self._scale = np.array([t.scale for t in transforms], np.float32)
        self._low = np.array([t.low for t in transforms], np.float32)
        self._high = np.array([t.high for t in transforms], np.float32)
        self._nan = np.array([t.nan_value for t in transforms], np.float32)

    def normalise_into(self, raw: FloatArray, out: FloatArray) -> FloatArray:
        """Write the normalised `raw` [B, 27] into `out` (which may be `raw` itself)."""
        if raw.shape != out.shape or raw.ndim != 2 or raw.shape[1] != TENSOR_SCHEMA_SIZE:
            raise ValueError(
                f"need two [B, {TENSOR_SCHEMA_SIZE}] arrays, got {raw.shape}, {out.shape}"
            )
        np.divide(raw, self._scale, out=out)
        # maximum/minimum rather than np.clip: the same result at half the per-call cost.
        np.maximum(out, self._low, out=out)  # -inf lands on the lower bound; NaN stays NaN
        np.minimum(out, self._high, out=out)  # +inf lands on the upper bound
        np.copyto(out, self._nan, where=np.isnan(out))
        return out


@functools.lru_cache(maxsize=8)
def normaliser_for(bounds: FeatureBounds) -> FeatureNormaliser:
    """The (cached) normaliser of `bounds`."""
    return FeatureNormaliser(bounds)


def normalise_into(
    raw: FloatArray, out: FloatArray, bounds: FeatureBounds = DEFAULT_BOUNDS
) -> FloatArray:
    """Normalise a [B, 27] batch of raw features into `out` (in place when `out` is `raw`)."""
    return normaliser_for(bounds).normalise_into(raw, out)


#: One raw row packed as float32 or as float64, by the dtype of the array written into.
_ROWS = {
    np.dtype(np.float32): struct.Struct(f"={TENSOR_SCHEMA_SIZE}f"),
    np.dtype(np.float64): struct.Struct(f"={TENSOR_SCHEMA_SIZE}d"),
}


def write_raw(signals: Sequence[FastTrainingSignals], out: RawArray) -> RawArray:
    """Write the raw features of each signal into the leading rows of `out`; returns those rows.

    `out` is a C-contiguous float32 or float64 [N, 27] array with N >= len(signals). Each row
    is packed straight into the array's memory from the signal's attributes in schema order,
    which measured fastest (bench/convert.py: a third faster than packing `to_vector()`).
    float64 rows hold every value exactly (the controller's decision columns read them).
    """
    count = len(signals)
    row = _ROWS.get(out.dtype)
    if row is None or out.ndim != 2 or out.shape[1] != TENSOR_SCHEMA_SIZE:
        raise ValueError(
            f"need a float32 or float64 [N, {TENSOR_SCHEMA_SIZE}] array, "
            f"got {out.dtype} {out.shape}"
        )
    if not out.flags.c_contiguous:
        raise ValueError("the array must be C-contiguous")
    if count > out.shape[0]:
        raise ValueError(f"{count} signals do not fit in {out.shape[0]} rows")
    rows = out[:count]
    if count == 0:
        return rows
    memory = rows.data.cast("B")
    pack, size = row.pack_into, row.size
    for index, s in enumerate(signals):
        try:
            pack(
                memory, index * size,
                s.epoch, s.global_step, s.train_loss, s.val_loss, s.loss_delta,
                s.train_accuracy, s.val_accuracy, s.accuracy_delta, s.plateau_epochs,
                s.best_val_accuracy, s.best_val_loss, *s.loss_history_5, *s.accuracy_history_5,
                s.has_active_seed, s.seed_stage, s.seed_epochs_in_stage, s.seed_alpha,
                s.seed_improvement, s.available_slots,
            )  # fmt: skip
        except OverflowError:
            # A finite value beyond float32 range: store it as the infinity it rounds to.
            with np.errstate(over="ignore"):
                rows[index] = s.to_vector()
    return rows


def features_markdown(bounds: FeatureBounds = DEFAULT_BOUNDS) -> str:
    """The feature transform reference (docs/features.md) as Markdown."""
    lines = [
        "# Model-input features",
        "",
        "Generated by `leyline.features.features_markdown()`; regenerate with",
        '`python -c "from leyline.features import features_markdown as m; '
        "print(m(), end='')\" > docs/features.md`.",
        "",
        "Every feature of `TensorSchema` is divided by its scale and clipped to its range.",
        "+inf becomes the upper bound and -inf the lower bound (the clip); NaN, an unknown",
        "value, becomes the neutral value below. Scales come from `FeatureBounds`:",
        "",
        *(f"- `{name}` = {getattr(bounds, name)!r}" for name in bounds.__struct_fields__),
        "",
        "| # | Feature | Raw range | Transform | Range | NaN | +inf | -inf |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for t in feature_transforms(bounds):
        scale = t.scale_name if t.scale_name == f"{t.scale:g}" else f"{t.scale_name} ({t.scale:g})"
        lines.append(
            f"| {t.feature.value} | `{t.feature.name}` | {t.raw_range} | x / {scale} "
            f"| [{t.low:g}, {t.high:g}] | {t.nan_value:g} | {t.high:g} | {t.low:g} |"
        )
    return "\n".join(lines) + "\n"
