"""PyTorch Lightning: `LeylineCallback` drives an `Agent` from a `Trainer.fit`.

    seeds = Seeds("w1", module)                 # no optimiser yet: Lightning builds it
    agent = Agent(worker_node("w1", ...), seeds)
    trainer = pl.Trainer(callbacks=[LeylineCallback(agent)], ...)
    trainer.fit(module, train_loader, val_loader)

At fit start the callback points the seeds at the optimiser `configure_optimizers` returned
(`trainer.optimizers[0]`), so a germinated seed's parameters join it as their own group and a
reset seed's leave it, and connects the agent. Each training epoch begins the agent's epoch
(germinated seeds start TRAINING); after every training batch it records the step
(`agent.step()`); at the end of every training epoch (after validation, so the epoch's
`callback_metrics` hold the validation metrics) it hands the logged metrics to
`agent.end_epoch`, which publishes them and applies the controller's commands: that is the
safe point, between the epoch's last optimiser step and the next epoch's first.
Checkpoint with the agent (`Agent(checkpoint=...)`): Lightning's own `ckpt_path` resume
loads the weights before any callback could rebuild the seeds they belong to.
Needs the `lightning` extra (`pip install esper-leyline[lightning]`).
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch

from services.worker.agent import Agent

__all__ = ["LeylineCallback"]


class LeylineCallback(pl.Callback):
    """Leyline's three calls at Lightning's hooks.

    The metric names are what the module logs (`self.log(...)`, epoch-level); `val_accuracy`
    is read as a fraction (torchmetrics' convention) and scaled by `accuracy_scale` to the
    percent the contracts use. A missing validation metric falls back to the training one.
    """

    def __init__(
        self,
        agent: Agent,
        *,
        train_loss: str = "train_loss",
        val_loss: str = "val_loss",
        val_accuracy: str = "val_accuracy",
        train_accuracy: str = "train_accuracy",
        accuracy_scale: float = 100.0,
        connect_timeout_s: float = 30.0,
    ) -> None:
        self.agent = agent
        self.names = (train_loss, val_loss, val_accuracy, train_accuracy)
        self.accuracy_scale = accuracy_scale
        self.connect_timeout_s = connect_timeout_s

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.optimizers:
            raise ValueError("LeylineCallback needs the optimiser configure_optimizers returns")
        self.agent.seeds.optimizer = lambda: trainer.optimizers[0]
        self.agent.connect(self.connect_timeout_s)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.agent.begin_epoch()

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        self.agent.step()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        metrics = trainer.callback_metrics
        train_loss, val_loss, val_accuracy, train_accuracy = self.names
        loss = _value(metrics, train_loss, 0.0)
        self.agent.end_epoch(
            train_loss=loss,
            val_loss=_value(metrics, val_loss, loss),
            val_accuracy=self.accuracy_scale * _value(metrics, val_accuracy, 0.0),
            train_accuracy=self.accuracy_scale * _value(metrics, train_accuracy, 0.0),
        )
        if self.agent.stopping:
            trainer.should_stop = True

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.agent.safe_point(self.agent.command_window_s)
        self.agent.finish()


def _value(metrics: dict[str, Any], name: str, default: float) -> float:
    value = metrics.get(name)
    if value is None:
        return default
    return float(value.item() if isinstance(value, torch.Tensor) else value)
