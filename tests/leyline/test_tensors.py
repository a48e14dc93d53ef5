"""Signals become normalised tensors on the device, alone or batched, with the same values."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from contract_strategies import for_struct
from hypothesis import given, settings
from hypothesis import strategies as st

from leyline import FastTrainingSignals
from leyline.features import normalise_into, write_raw
from leyline.signals import TENSOR_SCHEMA_SIZE
from leyline.tensors import BatchConverter, StagedBuffer, default_device, to_tensor

signal_lists = st.lists(for_struct(FastTrainingSignals), max_size=12)
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def one_by_one(batch: list[FastTrainingSignals], device: str = "cpu") -> torch.Tensor:
    rows = [to_tensor(s, device) for s in batch]
    return torch.stack(rows) if rows else torch.empty((0, TENSOR_SCHEMA_SIZE))


def test_importing_leyline_does_not_import_torch() -> None:
    probe = "import sys, leyline; print('torch' in sys.modules)"

    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    )

    assert result.stdout.strip() == "False"


def test_one_signal_becomes_its_normalised_vector_on_the_cpu() -> None:
    signals = FastTrainingSignals.empty()
    expected = np.zeros((1, TENSOR_SCHEMA_SIZE), np.float32)
    normalise_into(write_raw([signals], expected), expected)

    tensor = to_tensor(signals, "cpu")

    assert tensor.shape == (TENSOR_SCHEMA_SIZE,)
    assert tensor.dtype == torch.float32
    assert tensor.device == torch.device("cpu")
    np.testing.assert_array_equal(tensor.numpy(), expected[0])


def test_the_default_device_is_cuda_when_present_else_cpu() -> None:
    expected = "cuda" if torch.cuda.is_available() else "cpu"

    assert default_device().type == expected
    assert BatchConverter(4).device.type == expected
    assert BatchConverter(4, device="cpu").device == torch.device("cpu")


@settings(max_examples=100, deadline=None)
@given(signal_lists)
def test_batch_conversion_equals_one_by_one_conversion(batch: list[FastTrainingSignals]) -> None:
    converter = BatchConverter(16, device="cpu")

    tensor = converter.convert(batch)

    assert tensor.shape == (len(batch), TENSOR_SCHEMA_SIZE)
    assert torch.equal(tensor, one_by_one(batch))
    assert bool(((tensor >= -1.0) & (tensor <= 1.0)).all())


@settings(max_examples=50, deadline=None)
@given(st.lists(signal_lists, min_size=2, max_size=4))
def test_one_converter_serves_batches_of_different_sizes(
    batches: list[list[FastTrainingSignals]],
) -> None:
    converter = BatchConverter(12, device="cpu")

    for batch in batches:
        tensor = converter.convert(batch)

        assert torch.equal(tensor, one_by_one(batch))


def test_converted_batches_are_views_of_one_reused_buffer() -> None:
    converter = BatchConverter(8, device="cpu")
    first = converter.convert([FastTrainingSignals.empty()] * 8)
    start = first.data_ptr()

    second = converter.convert([FastTrainingSignals.empty(slot_index=1)] * 3)

    assert second.data_ptr() == start
    assert second.shape == (3, TENSOR_SCHEMA_SIZE)


def test_an_empty_batch_gives_an_empty_tensor() -> None:
    assert BatchConverter(4, device="cpu").convert([]).shape == (0, TENSOR_SCHEMA_SIZE)


def test_a_batch_larger_than_the_buffer_is_refused() -> None:
    converter = BatchConverter(2, device="cpu")

    with pytest.raises(ValueError, match="3 signals exceed max_batch 2"):
        converter.convert([FastTrainingSignals.empty()] * 3)


def test_a_converter_needs_room_for_one_signal() -> None:
    with pytest.raises(ValueError, match="max_batch must be at least 1"):
        BatchConverter(0)


@cuda
@settings(max_examples=30, deadline=None)
@given(st.lists(signal_lists, min_size=2, max_size=3))
def test_cuda_batches_equal_cpu_batches_across_reuse(
    batches: list[list[FastTrainingSignals]],
) -> None:
    converter = BatchConverter(12, device="cuda")

    for batch in batches:
        tensor = converter.convert(batch)

        assert tensor.device.type == "cuda"
        assert torch.equal(tensor.cpu(), one_by_one(batch))
        assert torch.equal(tensor, one_by_one(batch, "cuda"))


def test_a_staged_batch_on_the_cpu_is_a_kept_view_of_the_host_buffer() -> None:
    staged = StagedBuffer((8, 3), torch.float64, torch.device("cpu"))
    staged.host()[:2] = [[1, 2, 3], [4, 5, 6]]
    batch = staged.transfer(2)
    assert batch.tolist() == [[1, 2, 3], [4, 5, 6]]
    assert batch.data_ptr() == staged.array.ctypes.data  # no copy
    assert staged.transfer(2) is batch  # one view per row count, kept


def test_a_staged_batch_for_another_device_is_copied_there() -> None:
    # The meta device stands in for an accelerator: the rows must leave the host buffer.
    staged = StagedBuffer((8, 3), torch.bool, torch.device("meta"))
    batch = staged.transfer(5)
    assert batch.device.type == "meta"
    assert batch.shape == (5, 3) and batch.dtype == torch.bool
