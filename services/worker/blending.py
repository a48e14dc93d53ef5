"""How a seed's output meets the host's: the blend rule, the isolated pass and the alpha ramp."""

from __future__ import annotations

import math

import torch


def blend(host: torch.Tensor, seed: torch.Tensor, alpha: float) -> torch.Tensor:
    """host + alpha x (seed - host), with alpha clamped to [0, 1]."""
    return torch.lerp(host, seed, min(1.0, max(0.0, alpha)))


def isolated(host: torch.Tensor, seed: torch.Tensor) -> torch.Tensor:
    """Forward equals `host`, yet backward hands the seed the gradient it would get at alpha 1.

    `seed - seed.detach()` is zero in value but carries the seed's graph, so the loss trains
    the seed as if it replaced the host while the host's activations stay untouched.
    """
    return host + (seed - seed.detach())


def blend_alpha(step: int, total_steps: int, temperature: float = 1.0) -> float:
    """The blending ramp: 0 at step <= 0, 1 at step >= total, a sigmoid centred between."""
    if step <= 0:
        return 0.0
    if step >= total_steps:
        return 1.0
    return 1.0 / (1.0 + math.exp(-(step - total_steps / 2.0) / temperature))
