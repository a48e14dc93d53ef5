"""The built-in worker's model: its topology's host with the seed slots, and its optimiser.

Everything about seeds and commands is the library's (`Seeds`); this module only builds the
host the topology names (the digits CNN or the text transformer, `hosts`) and the optimiser
it trains with, the way a user builds theirs.
"""

from __future__ import annotations

from typing import Any

import torch

from leyline import LifecycleGuard
from services.worker.config import LifecycleConfig, TrainingConfig
from services.worker.hosts import host_family
from services.worker.seeds import Seeds
from services.worker.slot import SeedSlot

_HOST_GROUP = ""


class WorkerModel(Seeds):
    """The topology's host and its slots, driven by commands (see `Seeds`).

    The optimiser has one parameter group for the host and one per seed (tagged with its
    `slot_id`), so a seed's learning rate is its own and its state is dropped when the slot
    is reset.
    """

    def __init__(
        self,
        worker_id: str,
        training: TrainingConfig | None = None,
        lifecycle: LifecycleConfig | None = None,
        guard: LifecycleGuard | None = None,
    ) -> None:
        self.training = training or TrainingConfig()
        self.family = host_family(self.training.topology)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.training.seed)
            self.host = self.family.build(self.training)
        widths = self.family.slot_widths(self.training)
        self.host.slots.update({sid: SeedSlot(sid, width) for sid, width in widths.items()})
        super().__init__(
            worker_id,
            self.host,
            topology=self.family.topology,
            optimizer=self._new_optimizer(),
            seed_learning_rate=self.training.seed_learning_rate,
            lifecycle=lifecycle,
            guard=guard,
            seed=self.training.seed,
        )

    def _new_optimizer(self) -> torch.optim.Optimizer:
        t = self.training
        group: dict[str, Any] = {
            "params": list(self.host.host_parameters()),
            "lr": t.learning_rate,
            "slot_id": _HOST_GROUP,
        }
        if t.optimizer == "sgd":
            return torch.optim.SGD([group], lr=t.learning_rate, momentum=t.momentum)
        return torch.optim.Adam([group], lr=t.learning_rate)

    # -- checkpoint ------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """The seeds' lifecycles, the host's weights (seeds included) and the optimiser: all a
        resumed worker needs to continue exactly where this one stands."""
        optimizer = self.optimizer
        assert optimizer is not None  # the built-in model always has its own
        return {
            "seeds": super().state_dict(),
            "module": self.host.state_dict(),
            "optimizer": optimizer.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a `state_dict`: seeds are rebuilt first so their weights have somewhere to go."""
        self.optimizer = self._new_optimizer()
        super().load_state_dict(state["seeds"])
        self.host.load_state_dict(state["module"])
        optimizer = self.optimizer
        assert optimizer is not None
        optimizer.load_state_dict(state["optimizer"])
