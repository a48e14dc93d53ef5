"""Convert: signals to one normalised CPU tensor by `BatchConverter`, beside a plain copy.

The ceiling is `numpy.copyto` of the batch's bytes (B x 27 x 4), the least any conversion
into a buffer must do. A breakdown at the largest batch shows where the time goes: writing
the raw rows (`write_raw`, struct-packed; beside the obvious numpy list assignment it
replaced) and normalising them.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from bench._harness import measure, progress, ratio
from bench._samples import fast_signals
from leyline import TENSOR_SCHEMA_SIZE, BatchConverter, normalise_into, to_tensor, write_raw

BATCH_SIZES = (1, 64, 1024)


def run() -> dict[str, Any]:
    largest = max(BATCH_SIZES)
    signals = [fast_signals(epoch=n % 25, slot_index=n % 2) for n in range(largest)]
    converter = BatchConverter(largest, device="cpu")
    source = np.random.default_rng(0).random((largest, TENSOR_SCHEMA_SIZE), np.float32)
    target = np.empty_like(source)
    batches: dict[str, Any] = {}
    for size in BATCH_SIZES:
        batch = signals[:size]
        ours, ceiling = measure(
            functools.partial(converter.convert, batch),
            functools.partial(np.copyto, target[:size], source[:size]),
        )
        batches[str(size)] = {
            "batch_us": round(ours.best_us, 2),
            "signals_per_s": round(size * ours.per_s),
            "ceiling_us": round(ceiling.best_us, 3),
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


def _breakdown(signals: list[Any]) -> dict[str, float]:
    """Where a large batch's time goes: raw rows (two ways), then normalisation."""
    rows = np.empty((len(signals), TENSOR_SCHEMA_SIZE), np.float32)
    out = np.empty_like(rows)
    write_raw(signals, rows)

    def assign_lists() -> None:
        rows[:] = [s.to_vector() for s in signals]

    packed, assigned, normalised = measure(
        lambda: write_raw(signals, rows), assign_lists, lambda: normalise_into(rows, out)
    )
    progress(
        f"B={len(signals)} breakdown: write_raw {packed.best_us:.0f} us "
        f"(numpy list assignment {assigned.best_us:.0f} us), normalise {normalised.best_us:.0f} us"
    )
    return {
        "write_raw_us": round(packed.best_us, 1),
        "list_assignment_us": round(assigned.best_us, 1),
        "normalise_us": round(normalised.best_us, 1),
    }
