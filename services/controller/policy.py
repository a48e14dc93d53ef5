"""What every control policy is: a module from observations and legal-action masks to actions."""

from __future__ import annotations

import enum
from typing import NamedTuple

import torch
from torch import nn

from leyline.features import DEFAULT_BOUNDS, FeatureBounds
from services.controller.columns import ObservationBatch
from services.controller.layout import ActionLayout


class DecisionReason(enum.IntEnum):
    """Why a policy chose its action; travels as a tensor code, becomes the command's reason."""

    CULL_COOLDOWN = 1
    WARMING_UP = 2
    PLATEAU = 3
    NO_PLATEAU = 4
    SEED_GERMINATED = 5
    SEED_DEVELOPING = 6
    SEED_REGRESSING = 7
    SEED_IMPROVED = 8
    SEED_NOT_IMPROVED = 9
    ILLEGAL_PROPOSAL = 10
    LEARNED = 11

    @property
    def text(self) -> str:
        """The short, stable text a command carries: the lowercased name."""
        return _REASON_TEXT[self]


_REASON_TEXT = {reason: reason.name.lower() for reason in DecisionReason}


class PolicyOutput(NamedTuple):
    """One decision per observation: action index (int64), confidence (0-1), reason code."""

    actions: torch.Tensor
    confidence: torch.Tensor
    reasons: torch.Tensor


class ControlPolicy(nn.Module):
    """Base of the controller's policies: `forward(batch, masks) -> PolicyOutput`.

    `masks` is [B, A] bool from `ActionMasker`; a policy never returns a masked action.
    Policies with per-(worker, slot) memory keep it in tensors indexed by `batch.rows`
    and grow it in `reserve`; the inference loop calls `reserve` before a batch that
    uses a new row.
    """

    def __init__(self, layout: ActionLayout, bounds: FeatureBounds = DEFAULT_BOUNDS) -> None:
        super().__init__()
        self.layout = layout
        #: The bounds the features this policy reads are normalised with.
        self.bounds = bounds

    def reserve(self, rows: int) -> None:
        """Make room for memory rows 0..rows-1; stateless policies need nothing."""

    def forget(self, rows: torch.Tensor) -> None:
        """Reset the memory of `rows` (a worker restarted); stateless policies need nothing."""

    def forward(self, batch: ObservationBatch, masks: torch.Tensor) -> PolicyOutput:
        raise NotImplementedError
