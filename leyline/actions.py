"""The policy's discrete actions, built per topology from one blueprint catalogue.

The catalogue is the single source: the action enum, `is_germinate`, the blueprint lookup
and the action-to-command mapping are all derived from it, so they cannot disagree.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable
from typing import cast

import msgspec

from leyline.commands import AdaptationCommand, CommandType, RiskLevel
from leyline.lifecycle import SeedStage

__all__ = [
    "DEFAULT_BLUEPRINTS",
    "DEFAULT_CATALOG",
    "SLOT_IDS",
    "BlueprintCatalog",
    "BlueprintSpec",
    "action_to_command",
    "blueprint_of",
    "is_germinate",
]

_GERMINATE = "GERMINATE_"
#: Names that survive the trip into an action name and back (`upper()` then `lower()`).
_BLUEPRINT_NAME = re.compile(r"[a-z0-9_]+")


class BlueprintSpec(msgspec.Struct, frozen=True, kw_only=True):
    """One catalogue entry: a seed module a topology can grow."""

    name: str
    topology: str
    param_estimate: int
    description: str = ""

    def __post_init__(self) -> None:
        if not _BLUEPRINT_NAME.fullmatch(self.name):
            raise ValueError(f"blueprint name {self.name!r} is not lowercase ASCII [a-z0-9_]+")

    @property
    def key(self) -> str:
        return f"{self.topology}:{self.name}"


#: Seed slots (host injection points) per topology; a signal's `slot_index` indexes these.
SLOT_IDS: dict[str, tuple[str, ...]] = {
    "cnn": ("block2_post", "block3_post"),
    "transformer": tuple(f"layer_{i}_post_block" for i in range(6)),
}

DEFAULT_BLUEPRINTS: tuple[BlueprintSpec, ...] = (
    BlueprintSpec(name="norm", topology="cnn", param_estimate=100, description="GroupNorm tweak"),
    BlueprintSpec(
        name="attention", topology="cnn", param_estimate=2_000, description="SE channel gate"
    ),
    BlueprintSpec(
        name="depthwise", topology="cnn", param_estimate=4_800, description="separable conv"
    ),
    BlueprintSpec(
        name="conv_enhance", topology="cnn", param_estimate=74_000, description="2 conv blocks"
    ),
    BlueprintSpec(
        name="norm", topology="transformer", param_estimate=800, description="LayerNorm tweak"
    ),
    BlueprintSpec(name="lora", topology="transformer", param_estimate=6_000, description="rank 8"),
    BlueprintSpec(
        name="attention", topology="transformer", param_estimate=50_000, description="4 heads"
    ),
    BlueprintSpec(
        name="mlp", topology="transformer", param_estimate=1_200_000, description="4x expansion"
    ),
)


class BlueprintCatalog:
    """Blueprints by topology, with the per-topology action enums built from them and cached."""

    def __init__(self, blueprints: Iterable[BlueprintSpec] = DEFAULT_BLUEPRINTS) -> None:
        self._blueprints: dict[str, BlueprintSpec] = {}
        self._actions: dict[str, type[enum.IntEnum]] = {}
        for spec in blueprints:
            self.register(spec)

    def register(self, spec: BlueprintSpec) -> None:
        """Add or replace a blueprint; its topology's action enum is rebuilt on next use."""
        self._blueprints[spec.key] = spec
        self._actions.pop(spec.topology, None)

    def unregister(self, topology: str, name: str) -> None:
        del self._blueprints[f"{topology}:{name}"]
        self._actions.pop(topology, None)

    def topologies(self) -> list[str]:
        return sorted({spec.topology for spec in self._blueprints.values()})

    def blueprints(self, topology: str) -> list[BlueprintSpec]:
        """The topology's blueprints, ascending by parameter estimate (ties by name)."""
        found = [spec for spec in self._blueprints.values() if spec.topology == topology]
        if not found:
            raise KeyError(f"no blueprints registered for topology {topology!r}")
        return sorted(found, key=lambda spec: (spec.param_estimate, spec.name))

    def actions(self, topology: str) -> type[enum.IntEnum]:
        """`<Topology>Action`: WAIT 0, one GERMINATE_<NAME> per blueprint, FOSSILIZE, CULL."""
        cached = self._actions.get(topology)
        if cached is None:
            names = [_GERMINATE + spec.name.upper() for spec in self.blueprints(topology)]
            members = ["WAIT", *names, "FOSSILIZE", "CULL"]
            enum_name = topology.title().replace("_", "") + "Action"
            cached = cast(
                type[enum.IntEnum],
                enum.IntEnum(enum_name, [(m, i) for i, m in enumerate(members)]),
            )
            self._actions[topology] = cached
        return cached


DEFAULT_CATALOG = BlueprintCatalog()


def is_germinate(action: enum.IntEnum) -> bool:
    """True for the GERMINATE_<blueprint> actions."""
    return action.name.startswith(_GERMINATE)


def blueprint_of(action: enum.IntEnum) -> str | None:
    """The blueprint a germinate action grows, else None; always a registered name."""
    return action.name[len(_GERMINATE) :].lower() if is_germinate(action) else None


def action_to_command(
    action: enum.IntEnum,
    *,
    command_id: str,
    seed_id: str | None,
    slot_id: str | None,
    reason: str = "",
    confidence: float = 1.0,
) -> AdaptationCommand | None:
    """The command `command_id` that carries out `action`; WAIT sends nothing, so gives None."""
    name = action.name
    if name == "WAIT":
        return None
    common = {
        "command_id": command_id,
        "target_seed_id": seed_id,
        "target_slot_id": slot_id,
        "reason": reason[:64],
        "confidence": confidence,
    }
    if is_germinate(action):
        return AdaptationCommand(
            command_type=CommandType.GERMINATE,
            blueprint_id=blueprint_of(action),
            target_stage=SeedStage.GERMINATED,
            risk_level=RiskLevel.YELLOW,
            **common,  # type: ignore[arg-type]
        )
    if name == "FOSSILIZE":
        return AdaptationCommand(
            command_type=CommandType.ADVANCE_STAGE,
            target_stage=SeedStage.FOSSILIZED,
            risk_level=RiskLevel.YELLOW,
            **common,  # type: ignore[arg-type]
        )
    if name == "CULL":
        return AdaptationCommand(
            command_type=CommandType.CULL,
            target_stage=SeedStage.CULLED,
            risk_level=RiskLevel.ORANGE,
            **common,  # type: ignore[arg-type]
        )
    raise ValueError(f"no command for action {name}")
