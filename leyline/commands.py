"""Controller to worker commands, and the worker's acknowledgement of each."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Annotated

import msgspec

from leyline._types import Count, Finite, Ident, Positive, Text, Unit, new_id, utc_now
from leyline.lifecycle import SeedStage


class CommandType(enum.IntEnum):
    """What a command asks for: lifecycle 1-3, parameter 4-5, control 6-7, query 8."""

    GERMINATE = 1
    ADVANCE_STAGE = 2
    CULL = 3
    SET_ALPHA = 4
    SET_LEARNING_RATE = 5
    PAUSE_SEED = 6
    RESUME_SEED = 7
    REQUEST_STATE = 8


class RiskLevel(enum.IntEnum):
    """How risky the controller judges a command."""

    GREEN = 1
    YELLOW = 2
    ORANGE = 3
    RED = 4
    CRITICAL = 5


class SeedOperation(enum.IntEnum):
    """The lifecycle operations, each with the stage it leads to."""

    GERMINATE = 1
    START_TRAINING = 2
    START_BLENDING = 3
    START_SHADOWING = 4
    START_PROBATION = 5
    FOSSILIZE = 6
    CULL = 7
    EMBARGO = 8
    RESET = 9


OPERATION_TARGET_STAGE: dict[SeedOperation, SeedStage] = {
    SeedOperation.GERMINATE: SeedStage.GERMINATED,
    SeedOperation.START_TRAINING: SeedStage.TRAINING,
    SeedOperation.START_BLENDING: SeedStage.BLENDING,
    SeedOperation.START_SHADOWING: SeedStage.SHADOWING,
    SeedOperation.START_PROBATION: SeedStage.PROBATIONARY,
    SeedOperation.FOSSILIZE: SeedStage.FOSSILIZED,
    SeedOperation.CULL: SeedStage.CULLED,
    SeedOperation.EMBARGO: SeedStage.EMBARGOED,
    SeedOperation.RESET: SeedStage.RESETTING,
}

#: The largest learning rate a command may set: larger ones overflow the optimiser step.
MAX_LEARNING_RATE = 10.0

Reason = Annotated[str, msgspec.Meta(max_length=64)]
Annotations = Annotated[dict[str, str], msgspec.Meta(max_length=8)]


class AdaptationCommand(
    msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, tag="AdaptationCommand.v1"
):
    """One decision of the controller for one seed slot of one worker.

    The subject is named by `target_seed_id` and/or `target_slot_id`. Values are checked at
    decode time, and the cross-field rules (a GERMINATE names a blueprint, ...) and the
    bound of every value that could break training (`MAX_LEARNING_RATE`; alpha and
    confidence are in [0, 1] by type) in `__post_init__`, which msgspec runs on decode too.
    """

    command_id: Ident = msgspec.field(default_factory=new_id)
    timestamp: datetime = msgspec.field(default_factory=utc_now)
    command_type: CommandType = CommandType.GERMINATE
    target_seed_id: Ident | None = None
    target_slot_id: Ident | None = None
    blueprint_id: Ident | None = None
    target_stage: SeedStage | None = None
    alpha_value: Unit | None = None
    learning_rate: Positive | None = None
    reason: Reason = ""
    confidence: Unit = 1.0
    risk_level: RiskLevel = RiskLevel.GREEN
    annotations: Annotations = msgspec.field(default_factory=dict)
    #: The controller's per-worker journal sequence (1, 2, ...); 0 for an unjournaled command.
    sequence: Count = 0

    def __post_init__(self) -> None:
        kind = self.command_type
        if kind is CommandType.GERMINATE and not self.blueprint_id:
            raise ValueError("GERMINATE needs a blueprint_id")
        if kind is CommandType.SET_ALPHA and self.alpha_value is None:
            raise ValueError("SET_ALPHA needs an alpha_value")
        if kind is CommandType.SET_LEARNING_RATE and self.learning_rate is None:
            raise ValueError("SET_LEARNING_RATE needs a learning_rate")
        if self.learning_rate is not None and self.learning_rate > MAX_LEARNING_RATE:
            raise ValueError(
                f"learning_rate {self.learning_rate:g} is above the bound {MAX_LEARNING_RATE:g}"
            )
        if kind is not CommandType.REQUEST_STATE and not (
            self.target_seed_id or self.target_slot_id
        ):
            raise ValueError(f"{kind.name} needs a target_seed_id or target_slot_id")


class AckOutcome(enum.IntEnum):
    """What a worker did with a command."""

    APPLIED = 1
    REJECTED = 2
    DUPLICATE = 3


class CommandAck(
    msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, tag="CommandAck.v1"
):
    """A worker's answer to one command: applied, rejected (with why) or already seen."""

    command_id: Ident
    worker_id: Ident
    outcome: AckOutcome
    command_type: CommandType
    sequence: int = 0
    reason: Ident = ""
    detail: Text = ""
    stage_after: SeedStage | None = None
    epoch: int = 0
    duration_ms: Finite = 0.0


class WorkerHello(
    msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, tag="WorkerHello.v1"
):
    """A (re)starting worker names the last command sequence it applied, to get the rest."""

    worker_id: Ident
    last_applied_sequence: Count = 0
