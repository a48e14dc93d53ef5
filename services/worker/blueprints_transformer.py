"""The transformer seed modules, one per `transformer` blueprint of leyline's catalogue.

Every module maps B x T x D to the same shape and is a residual whose last layer starts at
zero, so a new seed is exactly the identity: blending it in at any alpha leaves the host's
output unchanged until the seed has learned something. The attention seed is causal, like the
host, so no seed can let a position see the tokens it must predict. Importing this module
registers them for the `transformer` topology.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from leyline.actions import DEFAULT_CATALOG
from services.worker.blueprints import SeedFactory, register_blueprint
from services.worker.host_transformer import HEADS, CausalSelfAttention

TOPOLOGY = "transformer"
LORA_RANK = 8
MLP_EXPANSION = 4


def _zero(layer: nn.Linear) -> nn.Linear:
    nn.init.zeros_(layer.weight)
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)
    return layer


class NormSeed(nn.Module):
    """LayerNorm tweak: x + LayerNorm(x) with a zero-initialised affine, so it starts as x."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        nn.init.zeros_(self.norm.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = x + self.norm(x)
        return out


class LoraSeed(nn.Module):
    """A rank-8 update x + up(down(x)); `up` starts at zero, as in LoRA."""

    def __init__(self, width: int, rank: int = LORA_RANK) -> None:
        super().__init__()
        self.down = nn.Linear(width, rank, bias=False)
        self.up = _zero(nn.Linear(rank, width, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = x + self.up(self.down(x))
        return out


class AttentionSeed(nn.Module):
    """One more causal attention layer (4 heads) on a pre-norm residual; output starts at zero."""

    def __init__(self, width: int, heads: int = HEADS) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.attention = CausalSelfAttention(width, heads)
        _zero(self.attention.out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = x + self.attention(self.norm(x))
        return out


class MlpSeed(nn.Module):
    """A 4x-expansion feed-forward layer on a pre-norm residual; output starts at zero."""

    def __init__(self, width: int, expansion: int = MLP_EXPANSION) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.expand = nn.Linear(width, expansion * width)
        self.project = _zero(nn.Linear(expansion * width, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = torch.nn.functional.gelu(self.expand(self.norm(x)))
        out: torch.Tensor = x + self.project(hidden)
        return out


#: The module factory for each `transformer` blueprint, keyed by its catalogue name.
SEED_FACTORIES: Mapping[str, SeedFactory] = {
    "norm": NormSeed,
    "lora": LoraSeed,
    "attention": AttentionSeed,
    "mlp": MlpSeed,
}

# Registered with the catalogue's estimates, so the action enum is the spec's (section 3).
for _spec in DEFAULT_CATALOG.blueprints(TOPOLOGY):
    register_blueprint(
        TOPOLOGY,
        _spec.name,
        SEED_FACTORIES[_spec.name],
        _spec.param_estimate,
        description=_spec.description,
    )
