"""The raw decision columns of a batch, beside the normalised features a learned policy reads.

Rules and masks compare against thresholds (epoch < 5, improvement < -2.0 pp, stage ==
PROBATIONARY). Deciding on normalised float32 features would move those comparisons by a
rounding step, so the few raw values the rules need travel as float64 (the feature block's
float32 values, widened exactly) in one small preallocated buffer.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import NamedTuple, cast

import numpy as np
import numpy.typing as npt
import torch

from leyline import FastTrainingSignals
from leyline.features import write_raw
from leyline.signals import TENSOR_SCHEMA_SIZE, TensorSchema
from leyline.tensors import StagedBuffer, default_device
from services.controller._host_passes import fill_columns


class Column(enum.IntEnum):
    """Index of each raw value in the decision columns."""

    ROW = 0
    EPOCH = 1
    PLATEAU_EPOCHS = 2
    VAL_ACCURACY = 3
    HAS_ACTIVE_SEED = 4
    SEED_STAGE = 5
    SEED_EPOCHS_IN_STAGE = 6
    SEED_IMPROVEMENT = 7
    AVAILABLE_SLOTS = 8


COLUMN_COUNT = len(Column)


class ObservationBatch(NamedTuple):
    """What a policy sees for one batch: normalised features and the raw decision columns.

    `columns[:, Column.ROW]` is each observation's memory row, one per (worker, slot).
    """

    features: torch.Tensor
    columns: torch.Tensor

    @property
    def rows(self) -> torch.Tensor:
        return self.columns[:, Column.ROW].long()

    def column(self, column: Column) -> torch.Tensor:
        return self.columns[:, column]


def pick_device(device: torch.device | str | None = None) -> torch.device:
    """`device` when given, else CUDA when present, else the CPU."""
    return default_device() if device is None else torch.device(device)


#: The feature each column after ROW is read from, in `Column` order (index into a raw row).
COLUMN_SOURCES = np.array([
    TensorSchema.EPOCH,
    TensorSchema.PLATEAU_EPOCHS,
    TensorSchema.VAL_ACCURACY,
    TensorSchema.HAS_ACTIVE_SEED,
    TensorSchema.SEED_STAGE,
    TensorSchema.SEED_EPOCHS_IN_STAGE,
    TensorSchema.SEED_IMPROVEMENT,
    TensorSchema.AVAILABLE_SLOTS,
], np.int64)  # fmt: skip


class ColumnBuffer:
    """Writes the decision columns of a batch into one preallocated buffer and ships it.

    The staging buffer is pinned when the target is CUDA, so the copy is asynchronous and
    there is exactly one host-to-device transfer per batch; on the CPU the buffer is used
    in place. The returned tensor is a view of the owned buffer, valid until the next `fill`.
    """

    def __init__(self, max_batch: int, device: torch.device | str | None = None) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        self.max_batch = max_batch
        self.device = pick_device(device)
        self._staged = StagedBuffer((max_batch, COLUMN_COUNT), torch.float64, self.device)
        self._raw = np.empty((max_batch, TENSOR_SCHEMA_SIZE), np.float64)
        #: The last batch's columns on the host, as an array (a view, valid until the next
        #: fill): for what is decided on the host (masks, the check of the policy's output).
        self.host: npt.NDArray[np.float64] = self._staged.array[:0]

    def fill(self, signals: Sequence[FastTrainingSignals], rows: Sequence[int]) -> torch.Tensor:
        """The [B, COLUMN_COUNT] float64 columns of `signals` on the device (a view, reused)."""
        if len(signals) > self.max_batch:
            raise ValueError(f"batch of {len(signals)} exceeds max_batch {self.max_batch}")
        return self.fill_raw(write_raw(signals, self._raw), rows)

    def fill_raw(
        self,
        raw: npt.NDArray[np.float32] | npt.NDArray[np.float64],
        rows: Sequence[int] | npt.NDArray[np.int64],
    ) -> torch.Tensor:
        """The same from raw rows [B, 27] (`write_raw`, `BatchConverter.load`), widened exactly
        (float32 rows in one compiled pass)."""
        count = len(raw)
        if count > self.max_batch:
            raise ValueError(f"batch of {count} exceeds max_batch {self.max_batch}")
        if len(rows) != count:
            raise ValueError(f"{len(rows)} memory rows for {count} signals")
        host = self.host_buffer()
        if count:
            if raw.dtype == np.float32 and raw.flags.c_contiguous:
                rows32 = cast("npt.NDArray[np.float32]", raw)
                fill_columns(rows32, np.asarray(rows, np.int64), COLUMN_SOURCES, host)
            else:
                host[:count, Column.ROW] = rows
                host[:count, Column.ROW + 1 :] = raw[:, COLUMN_SOURCES]
        return self.transfer(count)

    def host_buffer(self) -> npt.NDArray[np.float64]:
        """The whole host buffer [max_batch, COLUMN_COUNT], once the last transfer has read
        it: for a caller that writes the columns itself (then `transfer`)."""
        return self._staged.host()

    def transfer(self, count: int) -> torch.Tensor:
        """The first `count` rows of the host buffer on the device (`host` their array)."""
        self.host = self._staged.array[:count]
        return self._staged.transfer(count)
