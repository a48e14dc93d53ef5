"""Stress: a burst of every worker's signals through the controller's loop and journal.

N workers with two seed slots each send their signals at once, handed to the loop as the
controller's signal handler gets them: `SignalColumns` blocks of up to `DEFAULT_MAX_ROWS`
rows, one frame per worker, through the controller's own `SignalIntake` (before
2026-12-03 12:20 UTC: one `submit` of an object per signal; the receive itself, frames to
columns, is bench `receive`'s and not timed). The controller's tick then runs as
`Controller.tick` does it: `InferenceLoop.step`, the decisions' encoded commands
(`Decisions.commands`), then one `CommandJournal.issue_batch` for them (SQLite on disk, WAL,
synchronous=FULL), repeated until the burst is decided.

Figures per worker count: `decisions_per_s` (the burst's decisions over the time from its
first block's intake to its last commit) and the per-decision latency from its block's intake to
the commit of its tick (a WAIT's too: it is settled when its tick is), p50 / p99 / max, over
`ROUNDS` bursts, each one epoch newer than the last. The slots cycle through every seed
stage, as in `bench inference`, so 41 % of the heuristic's decisions carry a command.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench._harness import progress
from bench.inference import SLOTS, percentile, slot_signals
from bus.columnar import DEFAULT_MAX_ROWS, RowGroup, SignalColumns
from leyline import FastTrainingSignals
from leyline.features import DEFAULT_BOUNDS
from services.controller import (
    ActionLayout,
    ControlPolicy,
    HeuristicPolicy,
    InferenceLoop,
    MlpPolicy,
)
from services.controller.intake import SignalIntake
from services.controller.journal import CommandJournal

WORKER_COUNTS = (16, 64, 256, 1024)
#: Bursts per worker count; the first (warm-up: new memory rows, cold journal) is not counted.
ROUNDS = 11


def _burst(
    loop: InferenceLoop,
    intake: SignalIntake,
    journal: CommandJournal,
    blocks: Sequence[SignalColumns],
    block_of: dict[str, int],
) -> tuple[float, list[float]]:
    """Seconds from the first block's intake to the last commit, and each decision's latency
    in us (from its block's intake)."""
    clock = time.perf_counter
    start = clock()
    taken_in = []
    for block in blocks:
        taken_in.append(clock())
        intake(block)
    latencies: list[float] = []
    signals = sum(map(len, blocks))
    while len(latencies) < signals:
        decisions = loop.step()
        commands = decisions.commands()
        journal.issue_batch(
            commands.worker_ids, commands.slot_ids, commands.command_ids, commands.payloads
        )
        done = clock()
        latencies.extend(
            (done - taken_in[block_of[worker]]) * 1e6 for worker in decisions.pending.worker_ids()
        )
    return clock() - start, latencies


def _blocks(
    workers: int, signals: Sequence[FastTrainingSignals], epoch: int
) -> tuple[list[SignalColumns], dict[str, int]]:
    """The burst as a columnar receive hands it over: blocks of up to `DEFAULT_MAX_ROWS`
    rows, one frame (group) of `SLOTS` rows per worker; and each worker's block."""
    features = np.array([np.frombuffer(s.features, "<f4") for s in signals], np.float32)
    slot_index = np.array([s.slot_index for s in signals], np.int64)
    width = len(SLOTS)
    per_block = DEFAULT_MAX_ROWS // width
    blocks, block_of = [], {}
    for first in range(0, workers, per_block):
        names = range(first, min(workers, first + per_block))
        rows = slice(first * width, (names[-1] + 1) * width)
        groups = [
            RowGroup(f"w{worker}", "", (worker - first) * width, range(1, 1 + width))
            for worker in names
        ]
        count = len(names) * width
        blocks.append(
            SignalColumns(features[rows], np.full(count, epoch, np.int64), slot_index[rows], groups)
        )
        block_of.update((f"w{worker}", len(blocks) - 1) for worker in names)
    return blocks, block_of


def _one_count(
    make_policy: Callable[[], ControlPolicy], workers: int, max_batch: int, directory: Path
) -> dict[str, Any]:
    loop = InferenceLoop(make_policy(), max_batch=max_batch, max_wait_s=0.002, device="cpu")
    intake = SignalIntake(SLOTS, frozenset(), loop.batcher)
    journal = CommandJournal(directory / f"journal-{workers}-{max_batch}.db")
    per_slot = slot_signals(workers * len(SLOTS))
    elapsed: list[float] = []
    latencies: list[float] = []
    try:
        for round_ in range(ROUNDS):
            blocks, block_of = _blocks(workers, per_slot, 20 + round_)
            seconds, burst_latencies = _burst(loop, intake, journal, blocks, block_of)
            if round_:
                elapsed.append(seconds)
                latencies.extend(burst_latencies)
    finally:
        journal.close()
    decisions = len(per_slot)
    return {
        "decisions_per_burst": decisions,
        "decisions_per_s": round(decisions / statistics.median(elapsed)),
        "p50_us": round(statistics.median(latencies)),
        "p99_us": round(percentile(latencies, 0.99)),
        "max_us": round(max(latencies)),
    }


def run(max_batches: Sequence[int] = (64, 256), threads: int = 1) -> dict[str, Any]:
    """Figures per policy, max batch and worker count, on the CPU with one torch thread."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    layout = ActionLayout("cnn")
    policies: dict[str, Callable[[], ControlPolicy]] = {
        "heuristic": lambda: HeuristicPolicy(layout),
        "mlp": lambda: MlpPolicy(layout, DEFAULT_BOUNDS),
    }
    results: dict[str, Any] = {"threads": torch.get_num_threads(), "rounds": ROUNDS - 1}
    with tempfile.TemporaryDirectory(prefix="leyline-stress-") as directory:
        for name, make_policy in policies.items():
            for max_batch in max_batches:
                per_count: dict[str, Any] = {}
                for workers in WORKER_COUNTS:
                    figures = _one_count(make_policy, workers, max_batch, Path(directory))
                    per_count[str(workers)] = figures
                    progress(
                        f"{name:9s} max_batch={max_batch:3d} workers={workers:5d}  "
                        f"{figures['decisions_per_s']:8d} decisions/s  "
                        f"p50 {figures['p50_us']:8d} us  p99 {figures['p99_us']:8d} us"
                    )
                results[f"{name}_batch_{max_batch}"] = per_count
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.stress", description=__doc__)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    args = parser.parse_args(argv)
    print(json.dumps({"benchmark": "stress", **run(threads=args.threads)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
