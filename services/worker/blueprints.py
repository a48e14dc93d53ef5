"""Seed blueprints per topology: the registry a user extends, and the built-in `cnn` seeds.

A blueprint is a factory from the slot's feature width to a module that keeps its input's
shape, so a slot can blend it into the host at any alpha. The built-in CNN modules map
N x C x H x W to the same shape; their residual forms start close to the identity, which
keeps blending gentle. Any other topology (the transformer's, a user's own) registers its
probe shape and its blueprints through `register_topology` and `register_blueprint`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from leyline import LeylineError
from leyline.actions import DEFAULT_CATALOG, BlueprintSpec

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


class UnknownBlueprintError(LeylineError, KeyError):
    """No seed module is registered under that blueprint name (a KeyError for lookups)."""


#: A seed factory: the feature width at the slot (channels, model width) to a fresh module.
SeedFactory = Callable[[int], nn.Module]
#: The shape a topology's seeds are probed with at germination, from the slot's width.
ProbeShape = Callable[[int], tuple[int, ...]]


@dataclass(frozen=True)
class Blueprint:
    """A seed module a topology can grow: what builds it and how large it is expected to be."""

    topology: str
    name: str
    factory: SeedFactory
    estimate: int
    description: str = ""


_PROBES: dict[str, ProbeShape] = {}
_BLUEPRINTS: dict[str, dict[str, Blueprint]] = {}


def register_topology(topology: str, probe: ProbeShape) -> None:
    """Name a host family and the probe its seeds must map to itself (spec 8: a CNN seed is
    probed with 1 x C x 8 x 8, a transformer seed with 2 x 4 x C)."""
    _PROBES[topology] = probe


def register_blueprint(
    topology: str, name: str, factory: SeedFactory, estimate: int, *, description: str = ""
) -> Blueprint:
    """Let `topology`'s slots grow `name` seeds built by `factory(width)`.

    The blueprint also enters leyline's catalogue, so this process's action enum for the
    topology (and a policy or controller running in it) offers it, ordered by `estimate`.
    Registering a name again replaces it.
    """
    if topology not in _PROBES:
        known = ", ".join(sorted(_PROBES))
        raise ValueError(f"unknown topology {topology!r}: register_topology first ({known})")
    spec = BlueprintSpec(
        name=name, topology=topology, param_estimate=estimate, description=description
    )
    blueprint = Blueprint(topology, name, factory, estimate, description)
    DEFAULT_CATALOG.register(spec)
    _BLUEPRINTS.setdefault(topology, {})[name] = blueprint
    return blueprint


def unregister_blueprint(topology: str, name: str) -> None:
    """Forget a blueprint here and in leyline's catalogue."""
    del _BLUEPRINTS[topology][name]
    DEFAULT_CATALOG.unregister(topology, name)


def blueprints(topology: str) -> list[Blueprint]:
    """The topology's blueprints, ascending by estimate (ties by name), as the actions are."""
    found = _BLUEPRINTS.get(topology, {}).values()
    return sorted(found, key=lambda b: (b.estimate, b.name))


def probe_shape(topology: str, width: int) -> tuple[int, ...]:
    """The tensor shape a new `topology` seed on `width` features is checked against."""
    probe = _PROBES.get(topology)
    if probe is None:
        raise UnknownBlueprintError(f"no topology {topology!r} (known: {', '.join(_PROBES)})")
    return probe(width)


def build_seed(blueprint: str, channels: int, topology: str = TOPOLOGY) -> nn.Module:
    """A fresh seed module for `blueprint` on `channels`-wide features of `topology`."""
    registered = _BLUEPRINTS.get(topology, {})
    found = registered.get(blueprint)
    if found is None:
        known = ", ".join(sorted(registered))
        raise UnknownBlueprintError(f"no {topology} blueprint {blueprint!r} (known: {known})")
    return found.factory(channels)


def parameter_count(module: nn.Module) -> int:
    """How many numbers `module` adds to the model."""
    return sum(p.numel() for p in module.parameters())


def _register_builtin(name: str, factory: SeedFactory) -> None:
    """A `cnn` seed of leyline's catalogue, with the catalogue's estimate and description."""
    spec = next(s for s in DEFAULT_CATALOG.blueprints(TOPOLOGY) if s.name == name)
    register_blueprint(TOPOLOGY, name, factory, spec.param_estimate, description=spec.description)


register_topology(TOPOLOGY, lambda channels: (1, channels, 8, 8))
register_topology("transformer", lambda width: (2, 4, width))
for _name, _factory in (
    ("norm", NormSeed),
    ("attention", AttentionSeed),
    ("depthwise", DepthwiseSeed),
    ("conv_enhance", ConvEnhanceSeed),
):
    _register_builtin(_name, _factory)
