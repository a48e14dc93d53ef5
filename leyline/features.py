"""Model-input normalisation: every `TensorSchema` feature mapped into a fixed, bounded range.

Each feature is divided by a scale (a declared bound, or a constant such as 100 for percent)
and clipped to [0, 1], or to [-1, 1] for the signed deltas. Non-finite values are replaced
deterministically: +inf by the upper bound, -inf by the lower bound (the clip does both), NaN
by the feature's neutral value. numpy and the compiled row kernels (`leyline.kernels`): the
torch side lives in `leyline.tensors`.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any, NamedTuple, TypeVar

import msgspec
import numpy as np
import numpy.typing as npt

from leyline.errors import ContractError, RejectReason
from leyline.lifecycle import SeedStage
from leyline.signals import FEATURE_BLOCK, TENSOR_SCHEMA_SIZE, FastTrainingSignals, TensorSchema

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
    """One set of bounds as per-feature columns, applied to whole [B, 27] batches at once by
    the compiled row kernels (`leyline.kernels`: one pass, no numpy call per step)."""

    __slots__ = ("_kernels", "bounds", "columns")

    def __init__(self, bounds: FeatureBounds = DEFAULT_BOUNDS) -> None:
        from leyline import kernels

        transforms = feature_transforms(bounds)
        self.bounds = bounds
        self._kernels = kernels
        columns = (
            [t.scale for t in transforms],
            [t.low for t in transforms],
            [t.high for t in transforms],
            [t.nan_value for t in transforms],
        )
        scale, low, high, nan = (kernels.tiled(np.array(c, np.float32)) for c in columns)
        #: The bounds as the row kernels take them: scale, low, high, NaN value, tiled.
        self.columns = (scale, low, high, nan)

    def normalise_into(self, raw: FloatArray, out: FloatArray) -> FloatArray:
        """Write the normalised `raw` [B, 27] into `out` (which may be `raw` itself)."""
        _need_rows(raw, out)
        self._kernels.normalise(raw, out, *self.columns)
        return out

    def check_into(
        self, raw: FloatArray, out: FloatArray, checker: RowChecker
    ) -> npt.NDArray[np.intp]:
        """`checker.bad_rows(raw)` and `normalise_into(raw, out)` in one pass; the bad rows'
        indices, ascending. `out` must not be `raw`: a bad row stays there to be named."""
        _need_rows(raw, out)
        if np.shares_memory(raw, out):
            raise ValueError("check_into needs `out` apart from `raw`")
        bad = checker.scratch(len(raw))
        count = self._kernels.check_normalise(raw, out, *checker.columns, *self.columns, bad)
        return bad[:count].astype(np.intp) if count else _NO_ROWS


def _need_rows(*arrays: npt.NDArray[Any]) -> None:
    """The row kernels take C-contiguous float32 [B, 27] arrays of one shape."""
    shape = arrays[0].shape
    for array in arrays:
        if (
            array.shape != shape
            or array.ndim != 2
            or array.shape[1] != TENSOR_SCHEMA_SIZE
            or array.dtype != np.float32
            or not array.flags.c_contiguous
        ):
            raise ValueError(
                f"need C-contiguous float32 [B, {TENSOR_SCHEMA_SIZE}] arrays of one shape, "
                f"got {[(a.dtype.name, a.shape) for a in arrays]}"
            )


@functools.lru_cache(maxsize=8)
def normaliser_for(bounds: FeatureBounds) -> FeatureNormaliser:
    """The (cached) normaliser of `bounds`."""
    return FeatureNormaliser(bounds)


def normalise_into(
    raw: FloatArray, out: FloatArray, bounds: FeatureBounds = DEFAULT_BOUNDS
) -> FloatArray:
    """Normalise a [B, 27] batch of raw features into `out` (in place when `out` is `raw`)."""
    return normaliser_for(bounds).normalise_into(raw, out)


def write_raw(signals: Sequence[FastTrainingSignals], out: RawArray) -> RawArray:
    """Write the raw features of each signal into the leading rows of `out`; returns those rows.

    `out` is a C-contiguous float32 or float64 [N, 27] array with N >= len(signals). The
    signals' feature blocks are joined and copied in as one array: one attribute read per
    signal, no Python per feature. float64 rows hold every value exactly (float32 widened).
    The values are written unchecked: `RowChecker` says which rows break the contract.
    """
    count = len(signals)
    if out.dtype not in _RAW_DTYPES or out.ndim != 2 or out.shape[1] != TENSOR_SCHEMA_SIZE:
        raise ValueError(
            f"need a float32 or float64 [N, {TENSOR_SCHEMA_SIZE}] array, "
            f"got {out.dtype} {out.shape}"
        )
    if not out.flags.c_contiguous:
        raise ValueError("the array must be C-contiguous")
    if count > out.shape[0]:
        raise ValueError(f"{count} signals do not fit in {out.shape[0]} rows")
    rows = out[:count]
    if count:
        blocks = b"".join([s.features for s in signals])
        np.copyto(rows, np.frombuffer(blocks, _BLOCK_DTYPE).reshape(count, TENSOR_SCHEMA_SIZE))
    return rows


_RAW_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
#: One value of a feature block, as `FEATURE_BLOCK` lays it out (little-endian float32).
_BLOCK_DTYPE = np.dtype("<f4")
assert FEATURE_BLOCK.size == TENSOR_SCHEMA_SIZE * _BLOCK_DTYPE.itemsize

#: The largest count: v1's `Count` is at most 2**32 - 1, which rounds to 2**32 in float32.
_COUNT_MAX = float(2**32)
_FLOAT32_MAX = float(np.finfo(np.float32).max)


class FeatureRange(NamedTuple):
    """What a feature may hold on the wire: `low <= x <= high`, an integer when `integral`.

    Every range is either [0, high] or symmetric [-high, high], so one masked comparison of
    the float32 bit patterns checks it (NaN and the infinities included).
    """

    feature: TensorSchema
    low: float
    high: float
    integral: bool


def feature_ranges() -> tuple[FeatureRange, ...]:
    """The range of every feature in schema order: v1's field types, in float32."""
    f = TensorSchema
    count = (0.0, _COUNT_MAX, True)
    non_negative = (0.0, _FLOAT32_MAX, False)
    percent = (0.0, 100.0, False)
    delta = (-100.0, 100.0, False)
    kinds = {
        f.EPOCH: count,
        f.GLOBAL_STEP: count,
        f.TRAIN_LOSS: non_negative,
        f.VAL_LOSS: non_negative,
        f.LOSS_DELTA: (-_FLOAT32_MAX, _FLOAT32_MAX, False),
        f.TRAIN_ACCURACY: percent,
        f.VAL_ACCURACY: percent,
        f.ACCURACY_DELTA: delta,
        f.PLATEAU_EPOCHS: count,
        f.BEST_VAL_ACCURACY: percent,
        f.BEST_VAL_LOSS: non_negative,
        **{f[f"LOSS_HIST_{i}"]: non_negative for i in range(5)},
        **{f[f"ACC_HIST_{i}"]: percent for i in range(5)},
        f.HAS_ACTIVE_SEED: (0.0, 1.0, True),
        f.SEED_STAGE: (0.0, float(max(SeedStage)), True),
        f.SEED_EPOCHS_IN_STAGE: count,
        f.SEED_ALPHA: (0.0, 1.0, False),
        f.SEED_IMPROVEMENT: delta,
        f.AVAILABLE_SLOTS: count,
    }
    return tuple(FeatureRange(feature, *kinds[feature]) for feature in TensorSchema)


_RANGES = feature_ranges()
_SIGNED = np.array([r.low < 0 for r in _RANGES])
#: A signed range drops the sign bit before comparing; an unsigned one keeps it, so any
#: negative value (sign bit set) compares above every limit. -0.0 is refused where a feature
#: is non-negative (`pack_features` never writes it).
_MASK = np.where(_SIGNED, np.uint32(0x7FFF_FFFF), np.uint32(0xFFFF_FFFF)).astype(np.uint32)
_LIMIT = np.array([r.high for r in _RANGES], np.float32).view(np.uint32)
_WHOLE = np.array([r.integral for r in _RANGES], np.bool_)
_NO_ROWS = np.empty(0, np.intp)


class RowChecker:
    """Checks whole [B, 27] float32 batches of raw features against `feature_ranges()`.

    One compiled pass over the batch (`leyline.kernels.bad_rows`): the bit patterns against
    their limits (finite and in range together: NaN's and infinity's patterns lie above every
    finite limit) and the counting features' whole numbers; a row is looked at on its own
    only when its span broke a rule, and named by `refusal`.
    """

    def __init__(self, max_rows: int) -> None:
        from leyline import kernels

        self._kernels = kernels
        self.max_rows = max_rows
        #: The rules as the row kernels take them: mask, limit, whole, tiled to a span.
        self.columns = (kernels.tiled(_MASK), kernels.tiled(_LIMIT), kernels.tiled(_WHOLE))
        self._bad = np.empty(max_rows, np.int64)

    def scratch(self, rows: int) -> npt.NDArray[np.int64]:
        """Room for the indices of up to `rows` bad rows (this checker's, reused)."""
        if rows > self.max_rows:
            raise ValueError(f"{rows} rows exceed this checker's {self.max_rows}")
        return self._bad

    def bad_rows(self, rows: FloatArray) -> npt.NDArray[np.intp]:
        """The indices, ascending, of the rows that break a feature's range."""
        _need_rows(rows)
        bad = self.scratch(len(rows))
        count = self._kernels.bad_rows(rows, *self.columns, bad)
        return bad[:count].astype(np.intp) if count else _NO_ROWS


def refusal(values: Sequence[float]) -> ContractError | None:
    """Why one raw row breaks the contract, naming its first bad feature; None if it does not.

    The same rules as `RowChecker`, one feature at a time: only for rows it flagged.
    """
    for rule, value in zip(_RANGES, values, strict=True):
        value = float(value)
        name = rule.feature.name.lower()
        if math.copysign(1.0, value) < 0 and rule.low == 0.0 and value == 0.0:
            problem = "is -0.0, not a non-negative value"
        elif not rule.low <= value <= rule.high:
            problem = f"is not in [{rule.low:g}, {rule.high:g}]"
        elif rule.integral and not value.is_integer():
            problem = "is not an integer"
        else:
            continue
        return ContractError(
            RejectReason.INVALID_VALUE,
            f"{FastTrainingSignals.__struct_config__.tag}: {name} = {value!r} {problem}",
            f"$.features[{rule.feature.value}]",
        )
    return None


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
