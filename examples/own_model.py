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
By default the controller (the heuristic policy) runs in this process on loopback TCP with
CURVE keys made in a temporary directory, so the example needs nothing else running.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from bus import Channel, Envelope
from bus.security import Curve, Role, generate_key
from bus.testing import InProcessBus
from leyline import TelemetryEvent
from services.controller.heuristic import HeuristicPolicy
from services.controller.inference import InferenceLoop
from services.controller.journal import CommandJournal
from services.controller.layout import ActionLayout
from services.controller.process import Controller
from services.node import Node
from services.stack import free_ports
from services.worker import Agent, Checkpoint, Seeds, SeedSlot, worker_node


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


class LocalController:
    """A controller with the heuristic policy, on its own thread in this process."""

    def __init__(self, node: Node, data_dir: Path) -> None:
        self.node = node
        self.journal_path = data_dir / "journal.db"
        self.telemetry = 0
        self.issued = self.applied = 0
        node.subscriber.on(Channel.TEL, self._count)
        self._thread = threading.Thread(target=self._run, name="controller")

    def _count(self, envelope: Envelope) -> None:
        self.telemetry += isinstance(envelope.message, TelemetryEvent)

    def _run(self) -> None:
        journal = CommandJournal(self.journal_path)  # SQLite: opened on the thread using it
        loop = InferenceLoop(HeuristicPolicy(ActionLayout("cnn")), device="cpu")
        controller = Controller(self.node, loop, journal)
        try:
            controller.run()
        finally:
            self.issued, self.applied = controller.issued, controller.applied
            journal.close()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.node.stop()
        self._thread.join()
        self.node.close()


def _local_tcp(data_dir: Path, worker_id: str) -> tuple[Node, Node]:
    """Controller and worker nodes on loopback TCP, CURVE on, with keys made for this run."""
    keys = data_dir / "keys"
    generate_key(keys, "controller", Role.CONTROLLER)
    generate_key(keys, worker_id, Role.WORKER)
    commands, intake = (f"tcp://127.0.0.1:{port}" for port in free_ports(2))
    controller = Node(
        "controller",
        subscribe=[(Channel.SIG, None), (Channel.ACK, None), (Channel.TEL, None)],
        publish_bind=[commands],
        subscribe_bind=[intake],
        security=Curve.from_directory(keys, "controller"),
    )
    worker = worker_node(
        worker_id,
        commands=[f"controller@{commands}"],
        intake=[f"controller@{intake}"],
        security=Curve.from_directory(keys, worker_id),
    )
    return controller, worker


def _in_process(bus: InProcessBus, worker_id: str) -> tuple[Node, Node]:
    channels = [(Channel.SIG, None), (Channel.ACK, None), (Channel.TEL, None)]
    controller = Node("controller", subscribe=channels, bus=bus)
    worker = worker_node(worker_id, bus=bus)
    bus.connect(controller.publisher, worker.subscriber)
    bus.connect(worker.publisher, controller.subscriber)
    return controller, worker


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
        if args.commands:
            security = (
                None
                if args.keys_dir is None
                else Curve.from_directory(args.keys_dir, args.worker_id)
            )
            node = worker_node(
                args.worker_id, commands=[args.commands], intake=args.intake, security=security
            )
        else:
            wiring = _in_process(bus, args.worker_id) if args.inproc else None
            controller_node, node = wiring or _local_tcp(Path(scratch), args.worker_id)
            local = LocalController(controller_node, Path(scratch))
        agent = Agent(node, seeds, checkpoint=checkpoint, command_window_s=0.05)
        if local is not None:
            local.start()
        try:
            agent.connect(timeout_s=10.0)
            train(agent, net, optimizer, args.epochs)
            agent.safe_point(0.5)  # the answers to the last epoch
        finally:
            if local is not None:
                local.stop()
            agent.close()
        applied = agent.ledger.last_applied
        grown = [s.slot_id for s in seeds.slots.values() if s.seed is not None]
        print(f"commands applied: {applied}; slots with a seed: {grown or 'none'}")
        if local is not None:
            print(f"telemetry events the controller heard: {local.telemetry}")
            ok = applied > 0 and local.applied == local.issued
            return 0 if ok else 1
        return 0


if __name__ == "__main__":
    sys.exit(main())
