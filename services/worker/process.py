"""The built-in worker process: the digits trainer's loop on the worker library (`Agent`).

It is the library's first example: a host with seed slots, its own loop (`Trainer.tick`), and
an `Agent` that publishes each epoch, checkpoints it, and applies the controller's commands
at the safe point after it, exactly once (see `services.worker.agent`).
"""

from __future__ import annotations

from services.node import Node
from services.worker.agent import Agent
from services.worker.checkpoint import Checkpoint
from services.worker.trainer import Trainer

__all__ = ["Checkpoint", "Worker"]


class Worker(Agent):
    """One digits worker on the bus: `run` trains `epochs` epochs under the controller."""

    def __init__(
        self,
        node: Node,
        trainer: Trainer,
        checkpoint: Checkpoint,
        *,
        epochs: int,
        command_window_s: float = 0.1,
    ) -> None:
        self.trainer = trainer
        self.model = trainer.model
        self.epochs = epochs
        super().__init__(
            node,
            trainer.model,
            clock=trainer.clock,
            checkpoint=checkpoint,
            state=trainer,
            command_window_s=command_window_s,
        )

    def run(self) -> None:
        """Train until `epochs` are done or the process is told to stop."""
        while self.trainer.epoch < self.epochs and not self.stopping:
            report = self.trainer.tick()
            self.publish(report)
            self.save()
            self.safe_point(self.command_window_s)
        self.safe_point(0.5)  # the answers to the last epoch's signals
        self.finish()
