"""A small MLP policy over the normalised features, saved to and loaded from a checkpoint."""

from __future__ import annotations

import os
from typing import Any

import msgspec
import torch
from torch import nn

from leyline.actions import DEFAULT_CATALOG, BlueprintCatalog
from leyline.features import FeatureBounds
from leyline.signals import TENSOR_SCHEMA_SIZE
from services.controller.columns import ObservationBatch
from services.controller.layout import ActionLayout
from services.controller.policy import ControlPolicy, DecisionReason, PolicyOutput

#: The checkpoint format; `load` refuses any other.
CHECKPOINT_FORMAT = "leyline.mlp-policy.v1"


class MlpArchitecture(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What a checkpoint needs to rebuild the network before loading its weights."""

    topology: str
    action_names: tuple[str, ...]
    features: int = TENSOR_SCHEMA_SIZE
    hidden: int = 64


class MlpPolicy(ControlPolicy):
    """features -> hidden -> hidden -> action logits; the masked argmax is the action.

    Confidence is the softmax probability of the chosen action among the legal ones. The
    feature bounds the network was trained with ride along in the checkpoint, so a loaded
    policy is fed features normalised the same way.
    """

    def __init__(self, layout: ActionLayout, bounds: FeatureBounds, hidden: int = 64) -> None:
        super().__init__(layout, bounds)
        self.architecture = MlpArchitecture(
            topology=layout.topology, action_names=layout.names, hidden=hidden
        )
        self.net = nn.Sequential(
            nn.Linear(TENSOR_SCHEMA_SIZE, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, len(layout)),
        )

    def forward(self, batch: ObservationBatch, masks: torch.Tensor) -> PolicyOutput:
        logits = self.net(batch.features).masked_fill(~masks, float("-inf"))
        confidence, actions = torch.softmax(logits, dim=1).max(dim=1)
        reasons = torch.full_like(actions, DecisionReason.LEARNED)
        return PolicyOutput(actions, confidence, reasons)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write weights, architecture and feature bounds to one file `load` reads back."""
        checkpoint = {
            "format": CHECKPOINT_FORMAT,
            "architecture": msgspec.to_builtins(self.architecture),
            "bounds": msgspec.to_builtins(self.bounds),
            "state_dict": {name: t.detach().cpu() for name, t in self.state_dict().items()},
        }
        torch.save(checkpoint, path)

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        catalog: BlueprintCatalog = DEFAULT_CATALOG,
        map_location: torch.device | str = "cpu",
    ) -> MlpPolicy:
        """Rebuild a saved policy; refuses a checkpoint whose actions the catalogue lacks."""
        checkpoint: dict[str, Any] = torch.load(path, map_location=map_location, weights_only=True)
        if checkpoint.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"{path}: not a {CHECKPOINT_FORMAT} checkpoint")
        architecture = msgspec.convert(checkpoint["architecture"], MlpArchitecture)
        layout = ActionLayout(architecture.topology, catalog)
        if layout.names != architecture.action_names:
            raise ValueError(
                f"{path}: checkpoint actions {architecture.action_names} do not match the "
                f"catalogue's {layout.names} for topology {architecture.topology!r}"
            )
        bounds = msgspec.convert(checkpoint["bounds"], FeatureBounds)
        policy = cls(layout, bounds, hidden=architecture.hidden)
        policy.load_state_dict(checkpoint["state_dict"])
        return policy
