"""One epoch = one tick: the built-in training loop (digits or text), on the library's clock.

This is the shape of any training loop under Leyline: begin the epoch, train (recording each
step on the clock), validate, and hand the epoch's metrics to the clock, which advances the
slots and builds what the worker publishes.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from services.worker.data import DataSplit, shuffled_batches
from services.worker.epochs import EpochClock, EpochReport
from services.worker.model import WorkerModel
from services.worker.tracker import SignalTracker


def _loss(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over every target: one per image, or one per next token."""
    return F.cross_entropy(outputs.flatten(0, -2), targets.flatten())


def _correct(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """How many targets the highest logit names: the classification or next-token accuracy."""
    return (outputs.argmax(dim=-1) == targets).sum()


class Trainer:
    """Trains a `WorkerModel` on its topology's data, one `tick()` per epoch, reproducibly.

    The task is read off the data: the targets have the shape of the model's output without
    its last (class) axis, so one loss and one accuracy serve digit classes and next tokens.

    Batch order comes from the trainer's own generator, so two trainers built from the same
    config, or one restored from the other's `state_dict()`, run identical epochs.
    """

    def __init__(self, model: WorkerModel, data: DataSplit | None = None) -> None:
        torch.set_num_threads(1)  # small convs: threads cost more than they give, and vary sums
        self.model = model
        config = model.training
        self.data = data or model.family.load_data(config)
        self.generator = torch.Generator().manual_seed(config.seed)
        self.clock = EpochClock(model)

    @property
    def epoch(self) -> int:
        return self.model.epoch

    @property
    def tracker(self) -> SignalTracker:
        return self.clock.tracker

    @property
    def global_step(self) -> int:
        return self.clock.global_step

    def train_epoch(self) -> tuple[float, float]:
        """One pass over the training set: (loss, accuracy %)."""
        model, data = self.model, self.data
        host, optimizer = model.host, model.optimizer
        assert optimizer is not None
        host.train()
        loss_sum = torch.zeros(())
        correct = torch.zeros((), dtype=torch.long)
        batches = shuffled_batches(
            data.train_x, data.train_y, model.training.batch_size, self.generator
        )
        for inputs, targets in batches:
            optimizer.zero_grad(set_to_none=True)
            logits = host(inputs)
            loss = _loss(logits, targets)
            loss.backward()  # type: ignore[no-untyped-call]
            self.clock.record_step()
            optimizer.step()
            loss_sum += loss.detach() * targets.numel()
            correct += _correct(logits, targets)
        seen = data.train_y.numel()
        return float(loss_sum) / seen, 100.0 * int(correct) / seen

    def evaluate(self) -> tuple[float, float]:
        """Validation (loss, accuracy %) in one batch, without gradients."""
        host = self.model.host
        host.eval()
        with torch.inference_mode():
            logits = host(self.data.val_x)
            loss = _loss(logits, self.data.val_y)
            correct = int(_correct(logits, self.data.val_y))
        return float(loss), 100.0 * correct / self.data.val_y.numel()

    def tick(self) -> EpochReport:
        """Train and validate one epoch, then update every slot and build the epoch's signals."""
        self.clock.begin()
        train_loss, train_accuracy = self.train_epoch()
        val_loss, val_accuracy = self.evaluate()
        return self.clock.end(
            train_loss=train_loss,
            train_accuracy=train_accuracy,
            val_loss=val_loss,
            val_accuracy=val_accuracy,
        )

    # -- checkpoint ------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """The model's state plus the batch-order generator, the tracker and the step count."""
        return {
            "model": self.model.state_dict(),
            "generator": self.generator.get_state(),
            "clock": self.clock.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.generator.set_state(state["generator"])
        self.clock.load_state_dict(state["clock"])
