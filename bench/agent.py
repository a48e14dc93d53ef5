"""Agent: what Leyline adds to one training step of a user's loop (`agent.step()`).

The ceiling is the user's own step alone: zero_grad, forward, backward and optimiser step of
the small CNN of `examples/own_model.py` (batch 64, 1 x 8 x 8, two seed slots). Ours is the
same step followed by `agent.step()` (gradient norms, each seed's gradient statistics, one
non-blocking turn of the bus, here an `InProcessBus`). Measured with both slots empty and with
a `norm` seed germinated in each, in TRAINING (the isolated forward and its isolation check
are then in both candidates: they are the slot's, not the agent's).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from bench._harness import measure, progress, ratio
from bus.testing import InProcessBus
from examples.own_model import SmallNet
from leyline import AdaptationCommand, CommandType, new_id
from services.worker import Agent, Seeds, worker_node


def _case(bus: InProcessBus, worker_id: str, seeded: bool) -> dict[str, Any]:
    torch.manual_seed(0)
    net = SmallNet()
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    seeds = Seeds(worker_id, net, optimizer=optimizer)
    agent = Agent(worker_node(worker_id, bus=bus), seeds)
    if seeded:
        for slot_id in seeds.slots:
            seeds.apply_command(
                AdaptationCommand(
                    command_id=new_id(),
                    command_type=CommandType.GERMINATE,
                    blueprint_id="norm",
                    target_slot_id=slot_id,
                )
            )
    agent.begin_epoch()  # germinated seeds start TRAINING
    x, y = torch.randn(64, 1, 8, 8), torch.randint(0, 2, (64,))

    def user_step() -> None:
        optimizer.zero_grad()
        F.cross_entropy(net(x), y).backward()  # type: ignore[no-untyped-call]
        optimizer.step()

    def with_agent() -> None:
        user_step()
        agent.step()

    ceiling, ours = measure(user_step, with_agent)
    agent.close()
    return {
        "user_step_us": round(ceiling.best_us, 1),
        "with_agent_us": round(ours.best_us, 1),
        "agent_step_us": round(ours.best_us - ceiling.best_us, 1),
        "ratio": ratio(ceiling, ours),
        "median_ratio": round(ceiling.median_ns / ours.median_ns, 4),
    }


def run() -> dict[str, Any]:
    torch.set_num_threads(1)
    with InProcessBus() as bus:
        progress("agent: a training step, slots empty")
        empty = _case(bus, "w1", seeded=False)
        progress("agent: a training step, a seed in TRAINING in each slot")
        seeded = _case(bus, "w2", seeded=True)
    return {"slots_empty": empty, "seeds_training": seeded}
