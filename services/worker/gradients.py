"""Gradient bookkeeping for seeds: per-epoch norm statistics and the isolation check."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from leyline.telemetry import EXPLODING_GRADIENT_NORM, VANISHING_GRADIENT_NORM, gradient_health


class GradientStats:
    """Accumulates a module's gradient norms over the steps of one epoch (spec 6.4)."""

    __slots__ = ("_exploding", "_norm_sum", "_observed", "_steps", "_vanishing")

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._norm_sum = 0.0
        self._steps = 0
        self._observed = 0
        self._vanishing = 0
        self._exploding = 0

    def record(self, parameters: Iterable[nn.Parameter]) -> None:
        """Add one step: the total norm, and each parameter's norm against the thresholds."""
        grads = [p.grad for p in parameters if p.grad is not None]
        if not grads:
            return
        norms = torch.stack(torch._foreach_norm(grads))
        self._norm_sum += float(torch.linalg.vector_norm(norms))
        self._steps += 1
        self._observed += len(grads)
        self._vanishing += int((norms < VANISHING_GRADIENT_NORM).sum())
        self._exploding += int((norms > EXPLODING_GRADIENT_NORM).sum())

    @property
    def steps(self) -> int:
        return self._steps

    @property
    def mean_norm(self) -> float:
        """The mean total gradient norm per step; 0 when nothing was recorded."""
        return self._norm_sum / self._steps if self._steps else 0.0

    @property
    def vanishing_fraction(self) -> float:
        return self._vanishing / self._observed if self._observed else 0.0

    @property
    def exploding_fraction(self) -> float:
        return self._exploding / self._observed if self._observed else 0.0

    @property
    def health(self) -> float:
        return gradient_health(self.vanishing_fraction, self.exploding_fraction)

    def state(self) -> dict[str, float | int]:
        return {
            "norm_sum": self._norm_sum,
            "steps": self._steps,
            "observed": self._observed,
            "vanishing": self._vanishing,
            "exploding": self._exploding,
        }

    def load(self, state: dict[str, float | int]) -> None:
        self._norm_sum = float(state["norm_sum"])
        self._steps = int(state["steps"])
        self._observed = int(state["observed"])
        self._vanishing = int(state["vanishing"])
        self._exploding = int(state["exploding"])


#: A seed whose gradients score below this is unhealthy (fails G5, needs attention).
HEALTHY_GRADIENT = 0.5


class SeedHealth:
    """A seed's gradient health: the running epoch's statistics and the last closed epoch's."""

    __slots__ = ("epochs", "has_exploding", "has_vanishing", "health", "norm", "norm_avg", "stats")

    def __init__(self) -> None:
        self.stats = GradientStats()
        self.norm = 0.0
        self.norm_avg = 0.0
        self.health = 1.0
        self.has_vanishing = False
        self.has_exploding = False
        self.epochs = 0

    @property
    def healthy(self) -> bool:
        return self.health >= HEALTHY_GRADIENT and not self.has_exploding

    @property
    def anomalous(self) -> bool:
        return self.has_vanishing or self.has_exploding

    def close_epoch(self) -> bool:
        """Summarise the epoch's statistics and start afresh; False when no step was seen."""
        stats = self.stats
        if not stats.steps:
            return False
        self.norm = stats.mean_norm
        self.health = stats.health
        self.has_vanishing = stats.vanishing_fraction > 0.0
        self.has_exploding = stats.exploding_fraction > 0.0
        self.epochs += 1
        self.norm_avg += (self.norm - self.norm_avg) / self.epochs
        stats.reset()
        return True

    def state(self) -> dict[str, object]:
        return {
            "stats": self.stats.state(),
            "summary": [self.norm, self.norm_avg, self.health, self.has_vanishing,
                        self.has_exploding, self.epochs],
        }  # fmt: skip

    def load(self, state: dict[str, Any]) -> None:
        self.stats.load(state["stats"])
        (self.norm, self.norm_avg, self.health, self.has_vanishing, self.has_exploding,
         self.epochs) = state["summary"]  # fmt: skip


def reaches_parameter(output: torch.Tensor, parameter_ids: frozenset[int]) -> bool:
    """True when backpropagating from `output` would write a gradient into any parameter whose
    `id` is in `parameter_ids`: walks the autograd graph to its leaves, stopping at the first."""
    root = output.grad_fn
    if root is None:
        return False
    stack = [root]
    seen: set[int] = set()
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        leaf = getattr(node, "variable", None)
        if leaf is not None and id(leaf) in parameter_ids:
            return True
        stack.extend(child for child, _ in node.next_functions if child is not None)
    return False
