"""Policies a user might write, loaded by import path in the tests (`own_policies:name`)."""

from __future__ import annotations

import torch
from torch import nn

from services.controller import ActionLayout, HeuristicPolicy


class LastLegal(nn.Module):
    """Picks the highest-numbered legal action: a choice the tests can predict from the masks."""

    def __init__(self, layout: ActionLayout) -> None:
        super().__init__()
        self.actions = len(layout)

    def forward(self, features: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        index = torch.arange(self.actions, device=masks.device)
        return torch.where(masks, index, -1).max(dim=1).values


class Scores(nn.Module):
    """Scores from one learned bias per action: what a checkpoint's state_dict sets."""

    def __init__(self, layout: ActionLayout) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(len(layout)))

    def forward(self, features: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        return self.bias.expand(features.shape[0], -1)


class TooWide(nn.Module):
    """Returns one score too many per row."""

    def __init__(self, layout: ActionLayout) -> None:
        super().__init__()
        self.width = len(layout) + 1

    def forward(self, features: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        return torch.zeros(features.shape[0], self.width)


class OutOfRange(nn.Module):
    """Proposes an action index the topology does not have."""

    def __init__(self, layout: ActionLayout) -> None:
        super().__init__()
        self.actions = len(layout)

    def forward(self, features: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        return torch.full((features.shape[0],), self.actions, dtype=torch.long)


def make_cnn_heuristic(layout: ActionLayout) -> HeuristicPolicy:
    """A ready policy for the wrong topology, whatever it is asked for."""
    return HeuristicPolicy(ActionLayout("cnn"))


def make_number(layout: ActionLayout) -> int:
    return 7


NOT_CALLABLE = 3
