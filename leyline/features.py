"""Model-input normalisation: every `TensorSchema` feature mapped into a fixed, bounded range.

Each feature is divided by a scale (a declared bound, or a constant such as 100 for percent)
and clipped to [0, 1], or to [-1, 1] for the signed deltas. Non-finite values are replaced
deterministically: +inf by the upper bound, -inf by the lower bound (the clip does both), NaN
by the feature's neutral value. numpy only: the torch side lives in `leyline.tensors`.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import NamedTuple, TypeVar

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
    """One set of bounds as per-feature columns, applied to whole [B, 27] batches at once.

    On C-contiguous batches every step runs over the flat array against the per-feature
    columns tiled to the batch's length: numpy broadcasting a 27-wide row runs its inner
    loop 27 elements at a time, three times slower at B = 1024 (bench convert).
    """

    __slots__ = ("_high", "_low", "_nan", "_scale", "_tiled", "bounds")

    def __init__(self, bounds: FeatureBounds = DEFAULT_BOUNDS) -> None:
        transforms = feature_transforms(bounds)
        self.bounds = bounds
        self._scale = np.array([t.scale for t in transforms], np.float32)
        self._low = np.array([t.low for t in transforms], np.float32)
        self._high = np.array([t.high for t in transforms], np.float32)
        self._nan = np.array([t.nan_value for t in transforms], np.float32)
        self._tiled: tuple[FloatArray, FloatArray, FloatArray, FloatArray] | None = None

    def normalise_into(
        self, raw: FloatArray, out: FloatArray, *, checked: bool = False
    ) -> FloatArray:
        """Write the normalised `raw` [B, 27] into `out` (which may be `raw` itself).

        `checked`: the rows passed `RowChecker` (finite), so there is no NaN to replace.
        """
        if raw.shape != out.shape or raw.ndim != 2 or raw.shape[1] != TENSOR_SCHEMA_SIZE:
            raise ValueError(
                f"need two [B, {TENSOR_SCHEMA_SIZE}] arrays, got {raw.shape}, {out.shape}"
            )
        scale, low, high, nan = self._scale, self._low, self._high, self._nan
        if raw.flags.c_contiguous and out.flags.c_contiguous:
            scale, low, high, nan = self._flat(len(raw))
            raw, out_flat = raw.reshape(-1), out.reshape(-1)
        else:
            out_flat = out
        np.divide(raw, scale, out=out_flat)
        # maximum/minimum rather than np.clip: the same result at half the per-call cost.
        np.maximum(out_flat, low, out=out_flat)  # -inf lands on the lower bound; NaN stays NaN
        np.minimum(out_flat, high, out=out_flat)  # +inf lands on the upper bound
        if not checked:
            np.copyto(out_flat, nan, where=np.isnan(out_flat))
        return out

    def _flat(self, rows: int) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
        """The four columns tiled for `rows` rows (grown by doubling, then sliced)."""
        size = rows * TENSOR_SCHEMA_SIZE
        if self._tiled is None or len(self._tiled[0]) < size:
            have = 0 if self._tiled is None else len(self._tiled[0]) // TENSOR_SCHEMA_SIZE
            count = max(rows, 2 * have, 64)
            columns = (self._scale, self._low, self._high, self._nan)
            self._tiled = tuple(np.tile(c, count) for c in columns)  # type: ignore[assignment]
        assert self._tiled is not None
        scale, low, high, nan = self._tiled
        return scale[:size], low[:size], high[:size], nan[:size]


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
_INTEGRAL = np.array([r.feature.value for r in _RANGES if r.integral], np.intp)
_NO_ROWS = np.empty(0, np.intp)


class RowChecker:
    """Checks whole [B, 27] float32 batches of raw features against `feature_ranges()`.

    Per batch: one AND and one compare of the bit patterns against their limits (finite and
    in range together: NaN's and infinity's patterns lie above every finite limit) over the
    flat batch, and an integer test of the seven counting features; a row is looked at on
    its own only when it broke a rule, to name the feature (`refusal`).
    """

    def __init__(self, max_rows: int) -> None:
        size = max_rows * TENSOR_SCHEMA_SIZE
        self._mask = np.tile(_MASK, max_rows)
        self._limit = np.tile(_LIMIT, max_rows)
        self._scratch = np.empty(size, np.uint32)
        self._over = np.empty(size, np.bool_)

    def bad_rows(self, rows: FloatArray) -> npt.NDArray[np.intp]:
        """The indices, ascending, of the rows that break a feature's range."""
        count = len(rows)
        if count == 0:
            return _NO_ROWS
        size = count * TENSOR_SCHEMA_SIZE
        if rows.dtype != np.float32 or not rows.flags.c_contiguous or size > len(self._mask):
            raise ValueError(f"need a C-contiguous float32 [<= {len(self._mask) // 27}, 27] array")
        bits = rows.reshape(-1).view(np.uint32)
        scratch, over = self._scratch[:size], self._over[:size]
        np.bitwise_and(bits, self._mask[:size], out=scratch)
        np.greater(scratch, self._limit[:size], out=over)
        counts = rows[:, _INTEGRAL]
        fractional = np.floor(counts) != counts  # NaN, too; the infinities are over
        if not (over.any() or fractional.any()):
            return _NO_ROWS
        bad = over.reshape(count, TENSOR_SCHEMA_SIZE).any(axis=1) | fractional.any(axis=1)
        return np.flatnonzero(bad)


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
