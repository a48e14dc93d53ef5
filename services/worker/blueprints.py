"""The CNN seed modules, one per `cnn` blueprint of leyline's catalogue, all shape-preserving.

Every module maps N x C x H x W to the same shape, so a slot can blend it into the host at any
alpha. The residual forms start close to the identity, which keeps blending gentle.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import nn

from leyline import LeylineError

TOPOLOGY = "cnn"


def _groups(channels: int, preferred: int = 4) -> int:
    """The largest group count up to `preferred` that divides `channels`."""
    return next(g for g in range(min(preferred, channels), 0, -1) if channels % g == 0)


class NormSeed(nn.Module):
    """GroupNorm tweak: renormalises the host's features per channel group."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(_groups(channels), channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.norm(x)
        return out


class AttentionSeed(nn.Module):
    """Squeeze-excitation: a learned gate per channel from the globally pooled features."""

    def __init__(self, channels: int, reduction: int = 4) -> None:
        super().__init__()
        hidden = max(1, channels // reduction)
        self.squeeze = nn.Linear(channels, hidden)
        self.excite = nn.Linear(hidden, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = x.mean(dim=(2, 3))
        gate = torch.sigmoid(self.excite(torch.relu(self.squeeze(pooled))))
        return x * gate[:, :, None, None]


class DepthwiseSeed(nn.Module):
    """Depthwise-separable conv (3x3 per channel, then 1x1 across channels) on a residual."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.depthwise = nn.Conv2d(channels, channels, 3, padding=1, groups=channels)
        self.pointwise = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mixed: torch.Tensor = self.pointwise(torch.relu(self.depthwise(x)))
        return x + mixed


class ConvEnhanceSeed(nn.Module):
    """Two 3x3 conv blocks on a residual: the largest, most expressive seed."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.first = nn.Conv2d(channels, channels, 3, padding=1)
        self.second = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        refined: torch.Tensor = self.second(torch.relu(self.first(x)))
        return x + refined


#: The module factory for each `cnn` blueprint, keyed by its catalogue name.
SEED_FACTORIES: Mapping[str, Callable[[int], nn.Module]] = {
    "norm": NormSeed,
    "attention": AttentionSeed,
    "depthwise": DepthwiseSeed,
    "conv_enhance": ConvEnhanceSeed,
}


class UnknownBlueprintError(LeylineError, KeyError):
    """No seed module is registered under that blueprint name (a KeyError for lookups)."""


def build_seed(blueprint: str, channels: int) -> nn.Module:
    """A fresh seed module for `blueprint` on `channels`-channel features."""
    factory = SEED_FACTORIES.get(blueprint)
    if factory is None:
        known = ", ".join(sorted(SEED_FACTORIES))
        raise UnknownBlueprintError(f"no {TOPOLOGY} blueprint {blueprint!r} (known: {known})")
    return factory(channels)


def parameter_count(module: nn.Module) -> int:
    """How many numbers `module` adds to the model."""
    return sum(p.numel() for p in module.parameters())
