"""Convert: signals to one normalised CPU tensor by `BatchConverter`, beside a plain copy.

The ceiling copies the B signals' received payloads (their encoded bytes, one Python bytes
object each, as the bus receives them) into one preallocated numpy buffer: the least any
conversion of received signals into a buffer must do. A breakdown at the largest batch
shows where the time goes: collecting the signals' feature blocks (one attribute read per
signal, the floor of any conversion from decoded signals), joining them into the raw rows
(`write_raw`, which includes that collection), checking the batch (`RowChecker`) and
normalising it.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import numpy.typing as npt

from bench._harness import measure, progress, ratio
from bench._samples import fast_signals
from leyline.features import FeatureNormaliser, RowChecker, write_raw
from leyline.signals import TENSOR_SCHEMA_SIZE
from leyline.tensors import BatchConverter, to_tensor
from leyline.wire import encode

BATCH_SIZES = (1, 64, 1024)


def run() -> dict[str, Any]:
    largest = max(BATCH_SIZES)
    signals = [fast_signals(epoch=n % 25, slot_index=n % 2) for n in range(largest)]
    converter = BatchConverter(largest, device="cpu")
    payloads = [encode(signal) for signal in signals]
    received = np.empty(sum(map(len, payloads)), np.uint8)
    batches: dict[str, Any] = {}
    for size in BATCH_SIZES:
        batch = signals[:size]
        ours, ceiling = measure(
            functools.partial(converter.convert, batch),
            functools.partial(_copy_payloads, payloads[:size], received),
        )
        batches[str(size)] = {
            "batch_us": round(ours.best_us, 2),
            "signals_per_s": round(size * ours.per_s),
            "ceiling_us": round(ceiling.best_us, 3),
            "ceiling_bytes": sum(map(len, payloads[:size])),
            "ratio": ratio(ceiling, ours),
        }
        progress(
            f"B={size:5d}  {ours.best_us:9.1f} us/batch  {size * ours.per_s:10.0f} signals/s  "
            f"copy {ceiling.best_us:7.2f} us  ratio {ratio(ceiling, ours):.4f}"
        )
    one = signals[0]
    (single,) = measure(lambda: to_tensor(one, "cpu"))
    progress(f"to_tensor (one signal)  {single.best_us:.1f} us")
    return {
        "batches": batches,
        "to_tensor_us": round(single.best_us, 2),
        "breakdown_1024": _breakdown(signals),
    }


def _copy_payloads(payloads: list[bytes], out: npt.NDArray[np.uint8]) -> None:
    """The ceiling: every payload's bytes, back to back, into the preallocated `out`."""
    joined = b"".join(payloads)
    out[: len(joined)] = np.frombuffer(joined, np.uint8)


def _breakdown(signals: list[Any]) -> dict[str, float]:
    """Where a large batch's time goes: the blocks collected, joined, checked, normalised."""
    rows = np.empty((len(signals), TENSOR_SCHEMA_SIZE), np.float32)
    out = np.empty_like(rows)
    write_raw(signals, rows)
    checker = RowChecker(len(signals))
    normaliser = FeatureNormaliser()

    def collect() -> object:
        return [s.features for s in signals]

    collected, written, checked, normalised = measure(
        collect,
        lambda: write_raw(signals, rows),
        lambda: checker.bad_rows(rows),
        lambda: normaliser.normalise_into(rows, out, checked=True),
    )
    progress(
        f"B={len(signals)} breakdown: collect blocks {collected.best_us:.1f} us, write_raw "
        f"(collect + join + copy) {written.best_us:.1f} us, check {checked.best_us:.1f} us, "
        f"normalise {normalised.best_us:.1f} us"
    )
    return {
        "collect_blocks_us": round(collected.best_us, 1),
        "write_raw_us": round(written.best_us, 1),
        "check_us": round(checked.best_us, 1),
        "normalise_us": round(normalised.best_us, 1),
    }
