"""Turns each epoch's losses and accuracies into the controller's TrainingMetrics (spec 8)."""

from __future__ import annotations

from collections import deque
from typing import Any

from leyline import TrainingMetrics
from leyline.signals import HISTORY_LENGTH

#: Accuracy gains below this many points count as a plateau epoch.
PLATEAU_DELTA = 0.5
#: best_val_loss is the minimum over this many most recent validation losses.
BEST_LOSS_WINDOW = 10


class SignalTracker:
    """Keeps the plateau counter, the best values and the recent histories across epochs."""

    def __init__(self) -> None:
        self.plateau_epochs = 0
        self.best_val_accuracy = 0.0
        self.val_losses: deque[float] = deque(maxlen=BEST_LOSS_WINDOW)
        self.val_accuracies: deque[float] = deque(maxlen=HISTORY_LENGTH)

    def update(
        self,
        *,
        epoch: int,
        global_step: int,
        train_loss: float,
        train_accuracy: float,
        val_loss: float,
        val_accuracy: float,
        grad_norm_host: float = 0.0,
        grad_norm_seed: float = 0.0,
    ) -> TrainingMetrics:
        """Fold in one epoch and return its metrics; deltas are 0 on the first epoch."""
        loss_delta = self.val_losses[-1] - val_loss if self.val_losses else 0.0
        accuracy_delta = val_accuracy - self.val_accuracies[-1] if self.val_accuracies else 0.0
        self.plateau_epochs = self.plateau_epochs + 1 if accuracy_delta < PLATEAU_DELTA else 0
        self.best_val_accuracy = max(self.best_val_accuracy, val_accuracy)
        self.val_losses.append(val_loss)
        self.val_accuracies.append(val_accuracy)
        return TrainingMetrics(
            epoch=epoch,
            global_step=global_step,
            train_loss=train_loss,
            val_loss=val_loss,
            loss_delta=loss_delta,
            train_accuracy=train_accuracy,
            val_accuracy=val_accuracy,
            accuracy_delta=accuracy_delta,
            plateau_epochs=self.plateau_epochs,
            best_val_accuracy=self.best_val_accuracy,
            best_val_loss=min(self.val_losses),
            grad_norm_host=grad_norm_host,
            grad_norm_seed=grad_norm_seed,
        )

    @property
    def loss_history(self) -> list[float]:
        """The last `HISTORY_LENGTH` validation losses, oldest first."""
        return list(self.val_losses)[-HISTORY_LENGTH:]

    @property
    def accuracy_history(self) -> list[float]:
        return list(self.val_accuracies)

    def state(self) -> dict[str, Any]:
        return {
            "plateau_epochs": self.plateau_epochs,
            "best_val_accuracy": self.best_val_accuracy,
            "val_losses": list(self.val_losses),
            "val_accuracies": list(self.val_accuracies),
        }

    def load(self, state: dict[str, Any]) -> None:
        self.plateau_epochs = state["plateau_epochs"]
        self.best_val_accuracy = state["best_val_accuracy"]
        self.val_losses = deque(state["val_losses"], maxlen=BEST_LOSS_WINDOW)
        self.val_accuracies = deque(state["val_accuracies"], maxlen=HISTORY_LENGTH)
