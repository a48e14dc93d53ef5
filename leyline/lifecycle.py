"""The seed lifecycle: 11 stages, 15 legal edges, and the predicates over them."""

from __future__ import annotations

import enum
from collections.abc import Mapping

__all__ = [
    "VALID_TRANSITIONS",
    "SeedStage",
    "is_active_stage",
    "is_failure_stage",
    "is_live_stage",
    "is_terminal_stage",
    "is_valid_transition",
    "next_stage",
]


class SeedStage(enum.IntEnum):
    """Where a seed is in its life; the values are the wire values."""

    UNKNOWN = 0
    DORMANT = 1
    GERMINATED = 2
    TRAINING = 3
    BLENDING = 4
    SHADOWING = 5
    PROBATIONARY = 6
    FOSSILIZED = 7
    CULLED = 8
    EMBARGOED = 9
    RESETTING = 10


_S = SeedStage

#: Every legal move, successors in order of preference; anything unlisted is illegal.
VALID_TRANSITIONS: Mapping[SeedStage, tuple[SeedStage, ...]] = {
    _S.UNKNOWN: (_S.DORMANT,),
    _S.DORMANT: (_S.GERMINATED,),
    _S.GERMINATED: (_S.TRAINING, _S.CULLED),
    _S.TRAINING: (_S.BLENDING, _S.CULLED),
    _S.BLENDING: (_S.SHADOWING, _S.CULLED),
    _S.SHADOWING: (_S.PROBATIONARY, _S.CULLED),
    _S.PROBATIONARY: (_S.FOSSILIZED, _S.CULLED),
    _S.FOSSILIZED: (),
    _S.CULLED: (_S.EMBARGOED,),
    _S.EMBARGOED: (_S.RESETTING,),
    _S.RESETTING: (_S.DORMANT,),
}

_ACTIVE = frozenset({_S.TRAINING, _S.BLENDING, _S.SHADOWING, _S.PROBATIONARY, _S.FOSSILIZED})
_FAILURE = frozenset({_S.CULLED, _S.EMBARGOED, _S.RESETTING})


def is_valid_transition(from_stage: SeedStage, to_stage: SeedStage) -> bool:
    """True when the map lists `to_stage` as a successor of `from_stage`."""
    return to_stage in VALID_TRANSITIONS.get(from_stage, ())


def is_terminal_stage(stage: SeedStage) -> bool:
    """Only FOSSILIZED is terminal; a culled slot goes on to be reused."""
    return stage is SeedStage.FOSSILIZED


def is_active_stage(stage: SeedStage) -> bool:
    """True when the seed contributes to the host's forward pass."""
    return stage in _ACTIVE


def is_failure_stage(stage: SeedStage) -> bool:
    """True for the cull, embargo and reset stages."""
    return stage in _FAILURE


def is_live_stage(stage: SeedStage) -> bool:
    """True when a seed occupies its slot and may still change: not empty, terminal or failed."""
    return stage not in (_S.UNKNOWN, _S.DORMANT) and not (
        is_terminal_stage(stage) or is_failure_stage(stage)
    )


def next_stage(stage: SeedStage) -> SeedStage | None:
    """The first successor that is not a failure stage: where an untargeted advance goes."""
    return next((s for s in VALID_TRANSITIONS.get(stage, ()) if not is_failure_stage(s)), None)
