"""Signals to normalised model-input tensors on the target device, one or a batch at a time.

torch is imported inside the functions, never at module import, so that the contracts
package stays importable (and fast to import) where torch is not wanted.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from leyline.features import (
    DEFAULT_BOUNDS,
    FeatureBounds,
    FeatureNormaliser,
    normalise_into,
    write_raw,
)
from leyline.signals import TENSOR_SCHEMA_SIZE, FastTrainingSignals

if TYPE_CHECKING:
    import torch

    DeviceLike = torch.device | str | None

__all__ = [
    "BatchConverter",
    "default_device",
    "to_tensor",
]


def default_device() -> torch.device:
    """CUDA when a GPU is present, else the CPU."""
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _resolve(device: DeviceLike) -> torch.device:
    import torch

    return default_device() if device is None else torch.device(device)


def to_tensor(
    signals: FastTrainingSignals,
    device: DeviceLike = None,
    bounds: FeatureBounds = DEFAULT_BOUNDS,
) -> torch.Tensor:
    """The normalised [27] feature vector of one signal, on `device` (default: `default_device`)."""
    import torch

    row = np.empty((1, TENSOR_SCHEMA_SIZE), np.float32)
    normalise_into(write_raw((signals,), row), row, bounds)
    return torch.from_numpy(row[0]).to(_resolve(device))


class BatchConverter:
    """Converts up to `max_batch` signals per call into one normalised [B, 27] tensor on a device.

    The signals are written into a preallocated host buffer (pinned when the device is CUDA),
    normalised there in place, and moved to a preallocated device buffer in one transfer. On
    the CPU the host buffer is the device buffer and nothing is copied. The tensor returned by
    `convert` is a view of that buffer: it stays valid until the next call.
    """

    def __init__(
        self, max_batch: int, device: DeviceLike = None, bounds: FeatureBounds = DEFAULT_BOUNDS
    ) -> None:
        import torch

        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        self.max_batch = max_batch
        self.device = _resolve(device)
        self._normaliser = FeatureNormaliser(bounds)
        self._pinned = self.device.type == "cuda"
        shape = (max_batch, TENSOR_SCHEMA_SIZE)
        self._host = torch.empty(shape, dtype=torch.float32, pin_memory=self._pinned)
        self._host_rows = self._host.numpy()
        self._target = (
            self._host
            if self.device.type == "cpu"
            else torch.empty(shape, dtype=torch.float32, device=self.device)
        )
        # Marks the end of the last host-to-device copy; waiting on it before refilling the
        # host buffer keeps a non-blocking copy from reading half-written rows.
        self._copied = torch.Event(self.device) if self._pinned else None

    @property
    def bounds(self) -> FeatureBounds:
        return self._normaliser.bounds

    def convert(self, signals: Sequence[FastTrainingSignals]) -> torch.Tensor:
        """The normalised batch [len(signals), 27] on the device, a view of the owned buffer."""
        self._check(len(signals))
        return self._ship(write_raw(signals, self._host_rows))

    def convert_raw(self, raw: npt.NDArray[np.float32] | npt.NDArray[np.float64]) -> torch.Tensor:
        """The same from raw rows [B, 27] already written by `write_raw` (float32 or float64).

        For a caller that reads the raw rows too (the controller's decision columns): the
        signals are walked once. float64 values beyond float32 range become infinities, as
        `write_raw` stores them.
        """
        count = len(raw)
        self._check(count)
        rows = self._host_rows[:count]
        with np.errstate(over="ignore"):
            np.copyto(rows, raw, casting="same_kind")
        return self._ship(rows)

    def _check(self, count: int) -> None:
        if count > self.max_batch:
            raise ValueError(f"{count} signals exceed max_batch {self.max_batch}")
        if self._copied is not None:
            self._copied.synchronize()

    def _ship(self, rows: npt.NDArray[np.float32]) -> torch.Tensor:
        """Normalise the host rows in place and move them to the device in one transfer."""
        count = len(rows)
        self._normaliser.normalise_into(rows, rows)
        if self._target is self._host:
            return self._host[:count]
        batch = self._target[:count]
        batch.copy_(self._host[:count], non_blocking=self._pinned)
        if self._copied is not None:
            self._copied.record()
        return batch
