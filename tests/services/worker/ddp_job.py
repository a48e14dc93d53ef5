"""One data-parallel worker job, run under `torchrun --nproc_per_node 2` by test_ddp.py.

Rank 0 speaks on the bus and also holds the controller's seat (a scripted controller on
loopback TCP): after epoch 1 it sends GERMINATE, after epoch 3 CULL. Every rank trains on
its own shard; after every epoch the ranks all-gather a hash of their parameters. Rank 0
writes what it saw to `<out>/ddp.json`.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from worker_helpers import TwoSlotNet

from bus import Channel, Envelope, Publisher, Subscriber, topic
from leyline import AdaptationCommand, CommandAck, CommandType, new_id
from services.stack import free_ports
from services.worker import Agent, LifecycleConfig, Seeds, worker_node
from services.worker.distributed import RankSync, ReplicatedModule

EPOCHS = 8
TIMEOUT_S = 60.0  # bounds a hang only


class Seat:
    """The controller's seat on rank 0: commands out, acks in."""

    def __init__(self) -> None:
        self.commands, self.intake = (f"tcp://127.0.0.1:{p}" for p in free_ports(2))
        self.publisher = Publisher(self.commands, "controller")
        channels = (Channel.SIG, Channel.TEL, Channel.ACK, Channel.REP)
        self.subscriber = Subscriber(self.intake, [(c, "w1") for c in channels], bind=True)
        self.acks: list[CommandAck] = []
        self.subscriber.on(Channel.ACK, self._ack)
        self.sequence = 0

    def _ack(self, envelope: Envelope) -> None:
        if isinstance(envelope.message, CommandAck):
            self.acks.append(envelope.message)

    def pump(self) -> None:
        self.publisher.service()
        self.subscriber.poll(0.002)

    def connect(self, agent: Agent) -> None:
        assert agent.node is not None
        node = agent.node
        deadline = time.monotonic() + TIMEOUT_S
        wanted = topic(Channel.CMD, "w1")
        while time.monotonic() < deadline:
            node.pump(0.002)
            self.pump()
            heard = self.subscriber.wait_ready(0.0, publishers=["w1"])
            subscribed = self.publisher.wait_for_subscribers(wanted, 1, 0.0)
            if heard and subscribed and node.subscriber.wait_ready(0.0):
                return
        raise TimeoutError("the worker never connected")

    def send(self, agent: Agent, kind: CommandType, **fields: object) -> None:
        """Publish the next journal entry and wait until the worker has it queued."""
        self.sequence += 1
        command = AdaptationCommand(
            command_id=new_id(),
            command_type=kind,
            sequence=self.sequence,
            **fields,  # type: ignore[arg-type]
        )
        self.publisher.publish(Channel.CMD, command, "w1")
        assert agent.node is not None
        deadline = time.monotonic() + TIMEOUT_S
        while not agent.due and time.monotonic() < deadline:
            agent.node.pump(0.002)
            self.pump()
        assert agent.due, "the command never arrived"

    def close(self) -> None:
        self.publisher.close()
        self.subscriber.close()


def _digest(module: nn.Module) -> str:
    flat = torch.cat([p.detach().flatten() for p in module.parameters()])
    return hashlib.sha256(flat.numpy().tobytes()).hexdigest()


def main(out: Path) -> None:
    dist.init_process_group("gloo")
    torch.set_num_threads(1)
    ranks = RankSync()
    torch.manual_seed(0)  # the same initial weights on every rank (DDP would broadcast them)
    net = TwoSlotNet()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.05)
    seeds = Seeds("w1", net, optimizer=optimizer, lifecycle=LifecycleConfig(embargo_epochs=1))
    model = ReplicatedModule(net, seeds)
    seat = Seat() if ranks.speaker else None
    node = None
    if seat is not None:
        node = worker_node("w1", commands=[seat.commands], intake=[seat.intake])
    agent = Agent(node, seeds, ranks=ranks, command_window_s=0.02)
    if seat is not None:
        seat.connect(agent)
        agent.hello()
    generator = torch.Generator().manual_seed(100 + ranks.rank)  # each rank its own shard
    x = torch.randn(64, 1, 6, 6, generator=generator)
    y = torch.randint(0, 2, (64,), generator=generator)
    hashes, counts, stages = [], [], []
    for epoch in range(1, EPOCHS + 1):
        for start in range(0, 64, 16):
            optimizer.zero_grad()
            loss = F.cross_entropy(model(x[start : start + 16]), y[start : start + 16])
            loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()
            agent.step()
        with torch.no_grad():
            logits = net(x)
            val_loss = F.cross_entropy(logits, y).item()
            accuracy = 100.0 * (logits.argmax(1) == y).float().mean().item()
        if seat is not None and epoch == 1:
            slot = {"target_slot_id": "block2_post"}  # the controller's name for after_first
            seat.send(agent, CommandType.GERMINATE, blueprint_id="norm", **slot)
        if seat is not None and epoch == 3:
            seat.send(agent, CommandType.CULL, target_slot_id="block2_post")
        agent.end_epoch(train_loss=loss.item(), val_loss=val_loss, val_accuracy=accuracy)
        everyone: list[object] = [None] * ranks.world
        dist.all_gather_object(everyone, _digest(net))
        hashes.append(everyone)
        counts.append(sum(p.numel() for p in net.parameters()))
        stages.append(net.after_first.stage.name)
    rebuilds: list[object] = [None] * ranks.world
    dist.all_gather_object(rebuilds, model.rebuilds)
    applied: list[object] = [None] * ranks.world
    dist.all_gather_object(applied, agent.ledger.last_applied)
    if seat is not None:
        deadline = time.monotonic() + TIMEOUT_S
        while len(seat.acks) < 2 and time.monotonic() < deadline:
            assert agent.node is not None
            agent.node.pump(0.002)  # the acks went out at their safe points; deliver them
            seat.pump()
        result = {
            "hashes": hashes,
            "param_counts": counts,
            "stages": stages,
            "rebuilds": rebuilds,
            "last_applied": applied,
            "acks": [a.outcome.name for a in seat.acks],
        }
        (out / "ddp.json").write_text(json.dumps(result))
        seat.close()
    agent.close()
    # Every rank leaves the group together: one that tears gloo down while another still
    # uses it aborts ("terminate called without an active exception").
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
