"""Signals to normalised model-input tensors on the target device, one or a batch at a time.

torch is imported inside the functions, never at module import, so that the contracts
package stays importable (and fast to import) where torch is not wanted.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from leyline.errors import ContractError
from leyline.features import (
    DEFAULT_BOUNDS,
    FeatureBounds,
    FeatureNormaliser,
    RowChecker,
    normalise_into,
    refusal,
    write_raw,
)
from leyline.signals import TENSOR_SCHEMA_SIZE, FastTrainingSignals

if TYPE_CHECKING:
    import torch

    DeviceLike = torch.device | str | None

_Words = npt.NDArray[np.uint32]
_Floats = npt.NDArray[np.float32]
#: `BatchConverter.rules`: mask, limit, whole, then scale, low, high, NaN value.
Rules = tuple[_Words, _Words, npt.NDArray[np.bool_], _Floats, _Floats, _Floats, _Floats]

__all__ = [
    "BatchConverter",
    "StagedBuffer",
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
    """The normalised [27] feature vector of one signal, on `device` (default: `default_device`).

    Raises `ContractError` (naming the feature) when a value breaks its range.
    """
    import torch

    row = np.empty((1, TENSOR_SCHEMA_SIZE), np.float32)
    write_raw((signals,), row)
    problem = refusal(row[0].tolist())
    if problem is not None:
        raise problem
    normalise_into(row, row, bounds)
    return torch.from_numpy(row[0]).to(_resolve(device))


class StagedBuffer:
    """A preallocated host buffer and where a batch of its first rows goes on a device.

    On the CPU the two are one buffer and a batch is a view of its first rows, kept by row
    count (a tensor slice costs ~3 us). Towards CUDA the host buffer is pinned and a batch is
    one non-blocking copy into a preallocated device buffer; `host()` waits for the last
    copy to end, so refilling the buffer never races a copy still reading it.
    """

    def __init__(self, shape: tuple[int, int], dtype: torch.dtype, device: torch.device) -> None:
        import torch

        self._pinned = device.type == "cuda"
        self._host = torch.zeros(shape, dtype=dtype, pin_memory=self._pinned)
        #: The host buffer as an array, for reading what was just written (`host` to write).
        self.array: npt.NDArray[Any] = self._host.numpy()
        self._target = (
            self._host if device.type == "cpu" else torch.zeros(shape, dtype=dtype, device=device)
        )
        self._copied = torch.Event(device) if self._pinned else None
        self._views: dict[int, torch.Tensor] = {}

    def host(self) -> npt.NDArray[Any]:
        """The whole host buffer, once the last transfer has read it: to be written."""
        if self._copied is not None:
            self._copied.synchronize()
        return self.array

    def transfer(self, count: int) -> torch.Tensor:
        """The first `count` rows on the device: a view of the host buffer on the CPU."""
        if self._target is self._host:
            view = self._views.get(count)
            if view is None:
                view = self._views[count] = self._host[:count]
            return view
        batch = self._target[:count]
        batch.copy_(self._host[:count], non_blocking=self._pinned)
        if self._copied is not None:
            self._copied.record()
        return batch


class BatchConverter:
    """Converts up to `max_batch` signals per call into one normalised [B, 27] tensor on a device.

    The signals' feature blocks are joined into a staging buffer, checked for the whole
    batch at once (`RowChecker`'s rules) and normalised into a preallocated host buffer in
    the same compiled pass (pinned when the device is CUDA), and moved to a preallocated
    device buffer in one transfer. On the CPU the host
    buffer is the device buffer and nothing is copied. The tensor returned by `convert` is a
    view of that buffer: it stays valid until the next call.

    A row that breaks the contract is refused by name and counted, and the rest of the batch
    goes on in order: after each call `refused` holds (index in the call, `ContractError`)
    for each refused signal, and `refused_total` counts them all.
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
        self._checker = RowChecker(max_batch)
        shape = (max_batch, TENSOR_SCHEMA_SIZE)
        self._staged = StagedBuffer(shape, torch.float32, self.device)
        #: Where `convert` joins the signals' raw rows: `convert_rows` reads them from here
        #: (normalising in place ran unvectorised, 3x slower, for the aliasing).
        self._raw = np.empty(shape, np.float32)
        self.refused: list[tuple[int, ContractError]] = []
        self.refused_total = 0

    @property
    def bounds(self) -> FeatureBounds:
        return self._normaliser.bounds

    def convert(self, signals: Sequence[FastTrainingSignals]) -> torch.Tensor:
        """The normalised batch [accepted, 27] on the device, a view of the owned buffer: the
        signals' feature blocks joined into a staging buffer, then `convert_rows`."""
        if len(signals) > self.max_batch:
            raise ValueError(f"{len(signals)} signals exceed max_batch {self.max_batch}")
        return self.convert_rows(write_raw(signals, self._raw))

    @property
    def rules(self) -> Rules:
        """The checks and the bounds as the row kernels take them (`RowChecker.columns`:
        mask, limit, whole; `FeatureNormaliser.columns`: scale, low, high, NaN value), for
        a caller's own compiled pass."""
        return (*self._checker.columns, *self._normaliser.columns)

    def host_rows(self) -> npt.NDArray[np.float32]:
        """The whole host buffer [max_batch, 27], once the last transfer has read it: for a
        caller that checks and normalises rows into it itself (then `transfer`)."""
        return self._staged.host()

    def convert_rows(self, raw: npt.NDArray[np.float32]) -> torch.Tensor:
        """The normalised batch of raw feature rows [B, 27] float32 (a columnar receive's
        `bus.columnar.SignalColumns.features`), checked and refused as `convert` does.

        The rows are read, never written: one compiled pass checks them and normalises them
        straight into the host buffer (`FeatureNormaliser.check_into`).
        """
        if len(raw) > self.max_batch:
            raise ValueError(f"{len(raw)} rows exceed max_batch {self.max_batch}")
        out = self.host_rows()[: len(raw)]
        kept = self.refuse(raw, self._normaliser.check_into(raw, out, self._checker))
        if kept is None:
            return self.transfer(len(out))
        accepted = int(kept.sum())
        out[:accepted] = out[kept]
        return self.transfer(accepted)

    def refuse(
        self, rows: npt.NDArray[np.float32], bad: npt.NDArray[np.intp]
    ) -> npt.NDArray[np.bool_] | None:
        """`refused` set for the `bad` rows of raw `rows`, each named and counted; None when
        there are none, else which rows pass."""
        if not len(bad):
            self.refused = []
            return None
        self.refused = [(int(i), self._refusal(rows[i])) for i in bad]
        self.refused_total += len(bad)
        kept = np.ones(len(rows), np.bool_)
        kept[bad] = False
        return kept

    def transfer(self, count: int) -> torch.Tensor:
        """The first `count` host rows on the device: the host buffer itself on the CPU."""
        return self._staged.transfer(count)

    @staticmethod
    def _refusal(row: npt.NDArray[np.float32]) -> ContractError:
        problem = refusal(row.tolist())
        assert problem is not None  # the checker and `refusal` apply the same rules
        return problem
