"""Inference: fast signals to decisions through the whole loop, beside the bare policy forward.

**ours**: `InferenceLoop` with max batch B fed as the controller is fed: one `SignalColumns`
block of B rows (B / 2 workers, one frame each, of two cnn slots), as a columnar receive
delivers it, through the controller's own `SignalIntake` (slot names, busy slots, then
`submit_rows`: conflation, the rows' features into the batcher's table), then `step`, which
stages the batch in one compiled pass (`stage_batch`: the rows gathered and checked, the
decision columns and masks made from them, the features normalised), runs the policy under
`torch.inference_mode`, reads the results back in one transfer and checks them on the host
(illegal proposals to WAIT). The decisions come back as arrays
(`Decisions`). **commanded**: the same, and then `Decisions.commands()`: the encoded bytes
of a command for every row whose action is not WAIT (`CommandEncoder`: a template per
action, reason, slot and confidence-is-1, patched with a counter id, the batch's one
timestamp and its confidence), with the columns the journal takes: what the controller
journals and sends. This is the goal's figure ("commands included").
**ceiling**: the same policy's `forward` on ready tensors (features, columns, masks already
on the device). The ratio is the share of a decision's time the policy itself takes.

Slots cycle through every seed stage, so the mix holds WAITs, germinations, culls and
fossilizations. Decisions/s come from `bench._harness.measure` (best repeat, commanded); the
per-batch p50/p99 from timing each of `LATENCY_BATCHES` commanded batches alone. Each timed
batch carries a newer epoch per slot than the last, built beforehand, so nothing is dropped
as stale; no command is in flight (every slot free). The receive itself (frames to columns)
is bench `receive`'s, not timed here.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch

from bench._harness import MIN_LOOP_NS, Timing, measure, progress, ratio
from bench._samples import fast_signals
from bus.columnar import RowGroup, SignalColumns
from leyline import FastTrainingSignals, SeedStage
from leyline.actions import SLOT_IDS
from leyline.features import DEFAULT_BOUNDS
from services.controller import (
    ActionLayout,
    ColumnBuffer,
    ControlPolicy,
    HeuristicPolicy,
    InferenceLoop,
    MlpPolicy,
    ObservationBatch,
)
from services.controller.commands import CommandBatch
from services.controller.intake import SignalIntake
from services.controller.masks import ActionMasker

BATCH_SIZES = (1, 8, 64, 256)
LATENCY_BATCHES = 300
#: The harness runs 31 repeats of >= 1 ms loops plus warm-up and calibration: this many ms of
#: batches (estimated from a trial batch), with a margin, are built before timing.
_POOL_MS = 3 * (31 + 10) * MIN_LOOP_NS / 1e6


#: The slots of the bench's topology: B slots are B / 2 workers of two slots each.
SLOTS = SLOT_IDS["cnn"]


def slot_signals(count: int) -> list[FastTrainingSignals]:
    """One signal per slot, the slots cycling through every stage (a plateau on empty ones)."""
    base = fast_signals(epoch=12)
    stages = list(SeedStage)
    signals = []
    for slot in range(count):
        stage = stages[slot % len(stages)]
        empty = stage in (SeedStage.UNKNOWN, SeedStage.DORMANT)
        signals.append(
            base.with_values(
                seed_stage=stage,
                has_active_seed=0 if empty else 1,
                available_slots=1 if empty else 0,
                plateau_epochs=3,
                seed_epochs_in_stage=6,
                seed_improvement=-3.0 if slot % 2 else 1.0,
                slot_index=slot % len(SLOTS),
            )
        )
    return signals


class _Feed:
    """Blocks of B rows as a columnar receive delivers them (`SignalColumns`: one frame per
    worker), each block one epoch newer than the last, built ahead of timing."""

    def __init__(self, slots: Sequence[FastTrainingSignals], batches: int) -> None:
        size = len(slots)
        features = np.array([np.frombuffer(s.features, "<f4") for s in slots], np.float32)
        slot_index = np.array([s.slot_index for s in slots], np.int64)
        width = len(SLOTS)
        groups = [
            RowGroup(f"w{start // width}", "", start, range(1, 1 + min(width, size - start)))
            for start in range(0, size, width)
        ]
        self._batches: Iterator[SignalColumns] = iter(
            [
                SignalColumns(features, np.full(size, epoch, np.int64), slot_index, groups)
                for epoch in range(20, 20 + batches)
            ]
        )

    def next(self) -> SignalColumns:
        return next(self._batches)


def _full_loop(loop: InferenceLoop, feed: _Feed, commanded: bool = False) -> Callable[[], object]:
    # The controller's own intake of a block (no command in flight: every slot is free),
    # and its tick's step, both on the monotonic clock as the controller reads it.
    intake = SignalIntake(SLOTS, frozenset(), loop.batcher)

    def decide_one_batch() -> object:
        intake(feed.next())  # the batch as one drained receive
        return loop.step()

    def command_one_batch() -> object:
        intake(feed.next())
        return loop.step().commands()

    return command_one_batch if commanded else decide_one_batch


def _bare_forward(policy: ControlPolicy, size: int, device: torch.device) -> Callable[[], object]:
    signals = slot_signals(size)
    columns = ColumnBuffer(size, device).fill(signals, range(size)).clone()
    features = torch.zeros((size, 27), device=device)
    masks = ActionMasker(policy.layout, device)(columns)
    batch = ObservationBatch(features, columns)
    synchronise = torch.cuda.synchronize if device.type == "cuda" else None

    def forward() -> object:
        with torch.inference_mode():
            out = policy(batch, masks)
        if synchronise is not None:
            synchronise()
        return out

    return forward


def _latencies(candidate: Callable[[], object], count: int) -> list[float]:
    """Microseconds of each of `count` single calls, garbage collection paused."""
    samples = []
    gc.disable()
    try:
        for _ in range(count):
            start = time.perf_counter_ns()
            candidate()
            samples.append((time.perf_counter_ns() - start) / 1e3)
    finally:
        gc.enable()
    return samples


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def _one_size(
    make_policy: Callable[[], ControlPolicy], size: int, device: torch.device
) -> dict[str, Any]:
    loop = InferenceLoop(make_policy(), max_batch=size, max_wait_s=1.0, device=device)
    slots = slot_signals(size)
    trial = _full_loop(loop, _Feed(slots, 5))
    # The fastest trial batch, halved: on a loaded machine a slow trial would size the pool
    # too small for the harness's later, faster loops (the pool ran out, StopIteration).
    per_batch_ms = max(min(_latencies(trial, 5)) / 1e3 / 2, 1e-3)
    # Epochs continue past the trial's, so nothing is stale; both candidates share the feed.
    feed = _Feed(slots, 2 * int(_POOL_MS / per_batch_ms) + 2 * LATENCY_BATCHES + 200)
    for _ in range(5):
        feed.next()
    ours_call = _full_loop(loop, feed)
    commanded_call = _full_loop(loop, feed, commanded=True)
    ceiling_call = _bare_forward(loop.policy, size, device)
    ours, commanded, ceiling = measure(ours_call, commanded_call, ceiling_call)
    latencies = _latencies(commanded_call, LATENCY_BATCHES)
    figures = _figures(size, ours, commanded, ceiling, latencies)
    commands = commanded_call()
    assert isinstance(commands, CommandBatch)
    figures["commands_per_batch"] = len(commands)
    return figures


def _figures(
    size: int, ours: Timing, commanded: Timing, ceiling: Timing, latencies: list[float]
) -> dict[str, Any]:
    return {
        "decisions_per_s": round(size * commanded.per_s),
        "batch_us": round(ours.best_us, 1),
        "commanded_batch_us": round(commanded.best_us, 1),
        "p50_us": round(statistics.median(latencies), 1),
        "p99_us": round(percentile(latencies, 0.99), 1),
        "ceiling_us": round(ceiling.best_us, 1),
        "ceiling_decisions_per_s": round(size * ceiling.per_s),
        "ratio": ratio(ceiling, ours),
        "commanded_ratio": ratio(ceiling, commanded),
    }


def run(
    device: str | torch.device = "cpu", threads: int = 1, sizes: Sequence[int] = BATCH_SIZES
) -> dict[str, Any]:
    """Figures per policy and batch size; one intra-op thread, as a controller would pin it.

    Batches this small gain nothing from a second thread, and on a shared machine its
    spin-waiting stalls for milliseconds when a neighbour holds the other core.
    """
    target = torch.device(device)
    torch.set_num_threads(threads)
    layout = ActionLayout("cnn")
    policies: dict[str, Callable[[], ControlPolicy]] = {
        "heuristic": lambda: HeuristicPolicy(layout),
        "mlp": lambda: MlpPolicy(layout, DEFAULT_BOUNDS),
    }
    torch.manual_seed(0)
    results: dict[str, Any] = {"device": str(target), "threads": torch.get_num_threads()}
    for name, make_policy in policies.items():
        per_size: dict[str, Any] = {}
        for size in sizes:
            figures = _one_size(make_policy, size, target)
            per_size[str(size)] = figures
            progress(
                f"{name:9s} B={size:3d}  {figures['decisions_per_s']:9d} decisions/s  "
                f"p50 {figures['p50_us']:8.1f} us  p99 {figures['p99_us']:8.1f} us  "
                f"forward {figures['ceiling_us']:7.1f} us  ratio {figures['ratio']:.3f}  "
                f"commanded {figures['commanded_ratio']:.3f}"
            )
        results[name] = per_size
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.inference", description=__doc__)
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument(
        "--sizes", type=int, nargs="+", default=BATCH_SIZES, help="batch sizes B to run"
    )
    args = parser.parse_args(argv)
    figures = run(args.device, args.threads, args.sizes)
    print(json.dumps({"benchmark": "inference", **figures}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
