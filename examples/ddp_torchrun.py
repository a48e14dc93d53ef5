"""Data-parallel training under torchrun: rank 0 speaks on the bus, every rank moves alike.

    python examples/ddp_torchrun.py              # launches itself: torchrun, 2 ranks, gloo, CPU
    torchrun --nproc_per_node 2 examples/ddp_torchrun.py

Every rank holds the same model and trains on its own shard. Only rank 0 has a node (and,
here, the heuristic controller on a thread); at each epoch's end the commands rank 0 has due
are broadcast and applied on every rank at the same step (`RankSync`), and the DDP wrapper is
rebuilt on every rank when a seed joins or leaves (`ReplicatedModule`). After every epoch the
ranks compare a hash of their parameters; the example exits 1 if they ever differ or if the
controller's commands were not all applied. With GPUs: `init_process_group("nccl")`, one
device per rank; that path is not exercised here.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from own_model import SmallNet  # the script's folder is on sys.path: the same user model
from torch import nn

from services.worker import Agent, Seeds
from services.worker.distributed import RankSync, ReplicatedModule
from services.worker.local import LocalController, local_controller

EPOCHS = 8


def shard(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 2, (n,), generator=generator)
    images = 0.5 * torch.randn(n, 1, 8, 8, generator=generator)
    for i, label in enumerate(labels.tolist()):
        rows = slice(0, 4) if label == 0 else slice(4, 8)
        images[i, 0, rows, rows] += 1.0
    return images, labels


def digest(module: nn.Module) -> str:
    flat = torch.cat([p.detach().flatten() for p in module.parameters()])
    return hashlib.sha256(flat.numpy().tobytes()).hexdigest()


def train(scratch: Path) -> int:
    dist.init_process_group("gloo")
    torch.set_num_threads(1)
    ranks = RankSync()
    torch.manual_seed(0)
    net = SmallNet()
    optimizer = torch.optim.Adam(net.parameters(), lr=3e-3)
    seeds = Seeds("w1", net, optimizer=optimizer)
    model = ReplicatedModule(net, seeds)
    local: LocalController | None = None
    node = None
    if ranks.speaker:
        local, node = local_controller(scratch, "w1")
    agent = Agent(node, seeds, ranks=ranks, command_window_s=0.1)
    agent.connect(timeout_s=10.0)
    x, y = shard(256, seed=ranks.rank)  # each rank its own data
    val_x, val_y = shard(64, seed=100 + ranks.rank)
    identical = True
    for _ in range(EPOCHS):
        for start in range(0, len(y), 32):
            optimizer.zero_grad()
            loss = F.cross_entropy(model(x[start : start + 32]), y[start : start + 32])
            loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()
            agent.step()
        with torch.no_grad():
            logits = net(val_x)
            val_loss = F.cross_entropy(logits, val_y).item()
            accuracy = 100.0 * (logits.argmax(1) == val_y).float().mean().item()
        agent.end_epoch(train_loss=loss.item(), val_loss=val_loss, val_accuracy=accuracy)
        hashes: list[object] = [None] * ranks.world
        dist.all_gather_object(hashes, digest(net))
        identical = identical and len(set(hashes)) == 1
        if ranks.speaker:
            stages = ", ".join(f"{s.slot_id} {s.stage.name}" for s in seeds.slots.values())
            same = "identical" if len(set(hashes)) == 1 else "DIFFERENT"
            print(f"epoch {agent.epoch}: {stages}; parameters on {ranks.world} ranks {same}")
    agent.finish()  # every rank: the last safe point, then rank 0's farewell
    agent.close()
    ok = identical
    if local is not None:
        local.stop()
        applied = agent.ledger.last_applied
        print(f"commands applied on every rank: {applied}; DDP rebuilt {model.rebuilds} times")
        ok = ok and applied > 0 and local.outcomes == ["APPLIED"] * applied
    # Every rank leaves the group together: one that tears gloo down while another still
    # uses it aborts ("terminate called without an active exception").
    dist.barrier()
    dist.destroy_process_group()
    return 0 if ok else 1


def main() -> int:
    if "RANK" in os.environ:  # a rank under torchrun
        with tempfile.TemporaryDirectory() as scratch:
            return train(Path(scratch))
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes", "1",
              "--nproc_per_node", "2", __file__]  # fmt: skip
    return subprocess.run(launch, check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
