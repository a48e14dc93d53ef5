"""PyTorch Lightning: a LightningModule with two seed slots, `LeylineCallback` in its Trainer.

    pip install 'esper-leyline[lightning]'
    python examples/lightning_model.py           # the heuristic controller in this process

The module is the user's: it logs `train_loss`, `val_loss` and `val_accuracy` (a fraction) and
returns its optimiser from `configure_optimizers`. The callback connects the agent, applies the
controller's commands at the end of each training epoch (after validation), and puts each new
seed's parameters into the optimiser Lightning built. Exits 1 unless every command the
controller sent was applied.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from own_model import SmallNet  # the script's folder is on sys.path: the same user model
from torch.utils.data import DataLoader, TensorDataset

from services.worker import Agent, Seeds
from services.worker.lightning import LeylineCallback
from services.worker.local import local_controller


class LitNet(SmallNet, pl.LightningModule):
    """own_model.py's network as a LightningModule: the same slots, Lightning's loop."""

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], _: int) -> torch.Tensor:
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.log("train_loss", loss, on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], _: int) -> None:
        x, y = batch
        logits = self(x)
        self.log("val_loss", F.cross_entropy(logits, y))
        self.log("val_accuracy", (logits.argmax(1) == y).float().mean())

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=3e-3)


def loader(n: int, seed: int) -> DataLoader[tuple[torch.Tensor, ...]]:
    """A bright square top-left (class 0) or bottom-right (class 1) in noise."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 2, (n,), generator=generator)
    images = 0.5 * torch.randn(n, 1, 8, 8, generator=generator)
    for i, label in enumerate(labels.tolist()):
        rows = slice(0, 4) if label == 0 else slice(4, 8)
        images[i, 0, rows, rows] += 1.0
    return DataLoader(TensorDataset(images, labels), batch_size=64)


def main() -> int:
    torch.manual_seed(0)
    module = LitNet()
    with tempfile.TemporaryDirectory() as scratch:
        local, node = local_controller(Path(scratch), "w1")
        agent = Agent(node, Seeds("w1", module), command_window_s=0.1)
        trainer = pl.Trainer(
            max_epochs=8,
            accelerator="cpu",
            callbacks=[LeylineCallback(agent)],
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
        )
        try:
            trainer.fit(module, loader(512, 0), loader(128, 1))
        finally:
            local.stop()
            agent.close()
    applied = agent.ledger.last_applied
    grown = [s.slot_id for s in agent.seeds.slots.values() if s.seed is not None]
    print(f"commands applied: {applied}; slots with a seed: {grown or 'none'}")
    print(f"the controller heard {local.signals} signals, {local.telemetry} events")
    return 0 if applied > 0 and local.outcomes == ["APPLIED"] * applied else 1


if __name__ == "__main__":
    sys.exit(main())
