"""A real Lightning fit under the real heuristic controller, on the real bus (TCP, CURVE).

The callback applies the controller's commands at the epoch's end, once each; the seeds'
parameters reach the optimiser Lightning built, and train; the controller hears the epochs.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

pl = pytest.importorskip("pytorch_lightning")

from worker_helpers import TwoSlotNet  # noqa: E402

from services.worker import Agent, Seeds  # noqa: E402
from services.worker.lightning import LeylineCallback  # noqa: E402
from services.worker.local import local_controller  # noqa: E402


class LitNet(TwoSlotNet, pl.LightningModule):
    """A user's Lightning module: two conv stages with a seed slot after each."""

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], _: int) -> torch.Tensor:
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.log("train_loss", loss, on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], _: int) -> None:
        x, y = batch
        logits = self(x)
        self.log("val_loss", F.cross_entropy(logits, y), on_epoch=True)
        self.log("val_accuracy", (logits.argmax(1) == y).float().mean(), on_epoch=True)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.0)  # on a plateau: the heuristic acts


def _loader(seed: int) -> DataLoader[tuple[torch.Tensor, ...]]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(64, 1, 6, 6, generator=generator)
    y = torch.randint(0, 2, (64,), generator=generator)
    return DataLoader(TensorDataset(x, y), batch_size=16)


@pytest.mark.slow
def test_a_lightning_fit_applies_every_command_once_and_trains_the_seeds(tmp_path: Path) -> None:
    torch.manual_seed(0)
    module = LitNet()
    local, node = local_controller(tmp_path, "w1")
    seeds = Seeds("w1", module, seed_learning_rate=0.05)
    agent = Agent(node, seeds, command_window_s=0.2)
    at_germination: dict[str, list[torch.Tensor]] = {}

    def remember() -> None:
        for slot in seeds.slots.values():
            if slot.seed is not None and slot.slot_id not in at_germination:
                at_germination[slot.slot_id] = [p.detach().clone() for p in slot.seed_parameters()]

    seeds.listeners.append(remember)
    trainer = pl.Trainer(
        max_epochs=9,
        accelerator="cpu",
        devices=1,
        callbacks=[LeylineCallback(agent)],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    try:
        trainer.fit(module, _loader(0), _loader(1))
    finally:
        local.stop()
        agent.close()

    assert local.issued > 0 and local.outcomes == ["APPLIED"] * local.issued
    assert agent.ledger.last_applied == local.issued  # each applied once, in journal order
    assert agent.seeds.germinations == local.issued
    seeded = [s for s in (module.after_first, module.after_second) if s.seed is not None]
    assert len(seeded) == local.issued
    optimizer = trainer.optimizers[0]
    for slot in seeded:
        group = next(g for g in optimizer.param_groups if g.get("slot_id") == slot.slot_id)
        assert group["params"] == slot.seed_parameters() and group["lr"] == 0.05
        pairs = zip(at_germination[slot.slot_id], slot.seed_parameters(), strict=True)
        assert any(not torch.equal(a, b) for a, b in pairs)  # the seed trained
    assert local.signals >= 2 * 9 and local.telemetry >= 9  # every epoch, every slot
