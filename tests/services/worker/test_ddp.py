"""Data parallelism under torchrun: 2 ranks on CPU (gloo), one speaking on the bus.

Every command is applied on every rank at the same step, the parameters stay identical on
every rank after every epoch (a hash all-gathered), and the DDP wrapper is rebuilt on every
rank when the seed joins and when it leaves. The NCCL path is the same code (`RankSync` moves
its metrics to the GPU); it needs GPU machines and is not run here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

JOB = Path(__file__).with_name("ddp_job.py")
ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.slow
def test_two_ranks_apply_every_command_alike_and_stay_identical(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes", "1",
               "--nproc_per_node", "2", str(JOB), str(tmp_path)]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=280, check=False
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    result = json.loads((tmp_path / "ddp.json").read_text())

    for epoch, (rank0, rank1) in enumerate(result["hashes"], start=1):
        assert rank0 == rank1, f"ranks diverged after epoch {epoch}"
    assert len({tuple(h) for h in result["hashes"]}) == len(result["hashes"])  # they trained
    assert result["acks"] == ["APPLIED", "APPLIED"]  # GERMINATE, CULL: once each
    assert result["last_applied"] == [2, 2]  # every rank applied both
    counts = result["param_counts"]
    assert counts[0] > counts[-1]  # the seed joined, then left after its embargo
    assert result["stages"][0] == "GERMINATED" and result["stages"][-1] == "DORMANT"
    assert result["rebuilds"] == [3, 3]  # the first wrapper, the seed in, the seed out
