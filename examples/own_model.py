"""Bring your own model: a plain PyTorch loop with two seed slots, driven by a Leyline controller.

    python examples/own_model.py                 # a controller in this process, real sockets
    python examples/own_model.py --inproc        # the same over an in-process bus
    python examples/own_model.py --worker-id w9 --keys-dir leyline-data/keys \\
        --commands controller@tcp://127.0.0.1:5550 \\
        --intake controller@tcp://127.0.0.1:5551 --intake sink@tcp://127.0.0.1:5552
                                                 # join a running `leyline up` stack
                                                 # (first: leyline keys generate w9 --role worker)

What the user writes is `SmallNet` (any module; a `SeedSlot` wherever a seed may grow, on a
feature map of any shape the seeds keep), their optimiser, and their loop. Leyline adds three
calls to the loop: `agent.step()` after each optimiser step, `agent.end_epoch(...)` with the
epoch's metrics (it publishes them and applies the controller's commands there, exactly once),
and `agent.connect()` at the start. A germinated seed's parameters join the optimiser.
By default the controller (the heuristic policy) runs on a thread of this process, on
loopback TCP with CURVE keys made in a temporary directory (`services.worker.local`), so the
example needs nothing else running; it exits 1 unless every command it was sent was applied.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from bus.security import Curve
from bus.testing import InProcessBus
from services.worker import Agent, Checkpoint, Seeds, SeedSlot, worker_node
from services.worker.local import LocalController, local_controller


class SmallNet(nn.Module):
    """The user's own network: two conv stages, a seed slot after each, a linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU())
        self.stem_out = SeedSlot("stem_out", 8)  # sees (B, 8, 8, 8)
        self.body = nn.Sequential(nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.body_out = SeedSlot("body_out", 16)  # sees (B, 16, 4, 4)
        self.head = nn.Linear(16, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.body_out(self.body(self.stem_out(self.stem(x))))
        logits: torch.Tensor = self.head(x.mean(dim=(2, 3)))
        return logits


def make_data(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Two classes of 8x8 images: a bright square top-left or bottom-right, in noise."""
    labels = torch.randint(0, 2, (n,), generator=generator)
    images = 0.5 * torch.randn(n, 1, 8, 8, generator=generator)
    for i, label in enumerate(labels.tolist()):
        rows = slice(0, 4) if label == 0 else slice(4, 8)
        images[i, 0, rows, rows] += 1.0
    return images, labels


def train(agent: Agent, net: SmallNet, optimizer: torch.optim.Optimizer, epochs: int) -> None:
    """The user's own loop, with Leyline's calls marked."""
    generator = torch.Generator().manual_seed(0)
    train_x, train_y = make_data(512, generator)
    val_x, val_y = make_data(128, generator)
    while agent.epoch < epochs and not agent.stopping:
        net.train()
        order = torch.randperm(len(train_y), generator=generator)
        loss_sum = 0.0
        for start in range(0, len(order), 64):
            batch = order[start : start + 64]
            optimizer.zero_grad()
            loss = F.cross_entropy(net(train_x[batch]), train_y[batch])
            loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()
            agent.step()  # Leyline: gradient statistics, bus serviced
            loss_sum += loss.item() * len(batch)
        net.eval()
        with torch.no_grad():
            logits = net(val_x)
            val_loss = F.cross_entropy(logits, val_y).item()
            val_accuracy = 100.0 * (logits.argmax(1) == val_y).float().mean().item()
        agent.end_epoch(  # Leyline: publish the epoch, apply the controller's commands
            train_loss=loss_sum / len(train_y), val_loss=val_loss, val_accuracy=val_accuracy
        )
        stages = ", ".join(f"{s.slot_id} {s.stage.name}" for s in agent.seeds.slots.values())
        print(f"epoch {agent.epoch:2d}  val {val_accuracy:5.1f}%  {stages}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--worker-id", default="w1")
    parser.add_argument("--inproc", action="store_true", help="in-process bus and controller")
    parser.add_argument("--commands", help="the controller's command address (joins a stack)")
    parser.add_argument("--intake", action="append", default=[], help="controller, sink intake")
    parser.add_argument("--keys-dir", help="the stack's key directory (CURVE)")
    parser.add_argument("--checkpoint", type=Path, help="resume from / save to this file")
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    net = SmallNet()
    optimizer = torch.optim.Adam(net.parameters(), lr=3e-3)
    seeds = Seeds(args.worker_id, net, optimizer=optimizer)  # new seeds join `optimizer`
    checkpoint = None if args.checkpoint is None else Checkpoint(args.checkpoint)

    with tempfile.TemporaryDirectory() as scratch, InProcessBus() as bus:
        local: LocalController | None = None
        if args.commands:  # a running stack's controller and sink
            security = None
            if args.keys_dir is not None:
                security = Curve.from_directory(args.keys_dir, args.worker_id)
            node = worker_node(
                args.worker_id, commands=[args.commands], intake=args.intake, security=security
            )
        else:  # the heuristic controller on a thread of this process
            wiring = bus if args.inproc else None
            local, node = local_controller(Path(scratch), args.worker_id, bus=wiring)
        agent = Agent(node, seeds, checkpoint=checkpoint, command_window_s=0.05)
        try:
            agent.connect(timeout_s=10.0)
            train(agent, net, optimizer, args.epochs)
            agent.safe_point(0.5)  # the answers to the last epoch
            agent.finish()  # farewell: the controller settles anything still in flight
        finally:
            if local is not None:
                local.stop()
            agent.close()
        applied = agent.ledger.last_applied
        grown = [s.slot_id for s in seeds.slots.values() if s.seed is not None]
        print(f"commands applied: {applied}; slots with a seed: {grown or 'none'}")
        if local is None:
            return 0
        print(f"the controller heard {local.signals} signals, {local.telemetry} events")
        return 0 if applied > 0 and local.outcomes == ["APPLIED"] * applied else 1


if __name__ == "__main__":
    sys.exit(main())
