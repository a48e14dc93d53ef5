"""The worker library: seed slots in your own `nn.Module`, driven by Leyline from your own loop.

What a user writes (see `examples/own_model.py` and docs):

    class Net(nn.Module):                       # any module; slots go anywhere
        def __init__(self):
            ...
            self.slot = SeedSlot("block2_post", 32)   # on a (B, 32, H, W) feature map

    net = Net()
    optimizer = torch.optim.Adam(net.parameters())
    seeds = Seeds("w1", net, optimizer=optimizer)     # new seeds join this optimiser
    agent = Agent(worker_node("w1", commands=..., intake=[...]), seeds)
    agent.connect()
    for epoch in range(epochs):
        for x, y in batches:
            ...; loss.backward(); optimizer.step(); agent.step()
        agent.end_epoch(train_loss=..., val_loss=..., val_accuracy=...)

Blueprints are registered per topology (`register_topology`, `register_blueprint`); the
built-in digits worker (`WorkerModel`, `Trainer`, `Worker`) is built the same way.
"""

from services.worker.agent import Agent, Ranks, TrainingState, worker_node
from services.worker.blending import blend, blend_alpha, isolated
from services.worker.blueprints import (
    Blueprint,
    UnknownBlueprintError,
    blueprints,
    build_seed,
    probe_shape,
    register_blueprint,
    register_topology,
    unregister_blueprint,
)
from services.worker.checkpoint import Checkpoint, Stateful
from services.worker.config import LifecycleConfig, TrainingConfig
from services.worker.data import DataSplit, load_digits_split, shuffled_batches
from services.worker.epochs import EpochClock, EpochReport
from services.worker.host import HostCNN
from services.worker.model import WorkerModel
from services.worker.outcome import CommandOutcome
from services.worker.seeds import Seeds
from services.worker.slot import SeedSlot, SlotChange
from services.worker.trainer import Trainer

__all__ = [
    "Agent",
    "Blueprint",
    "Checkpoint",
    "CommandOutcome",
    "DataSplit",
    "EpochClock",
    "EpochReport",
    "HostCNN",
    "LifecycleConfig",
    "Ranks",
    "SeedSlot",
    "Seeds",
    "SlotChange",
    "Stateful",
    "Trainer",
    "TrainingConfig",
    "TrainingState",
    "UnknownBlueprintError",
    "WorkerModel",
    "blend",
    "blend_alpha",
    "blueprints",
    "build_seed",
    "isolated",
    "load_digits_split",
    "probe_shape",
    "register_blueprint",
    "register_topology",
    "shuffled_batches",
    "unregister_blueprint",
    "worker_node",
]
