"""Controller to worker commands, and the worker's acknowledgement of each."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Annotated

import msgspec
from msgspec import UNSET, UnsetType

from leyline._types import Count, Finite, Ident, Positive, Text, Unit, utc_now
from leyline.errors import ContractError, RejectReason
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


#: The largest learning rate a command may set: larger ones overflow the optimiser step.
MAX_LEARNING_RATE = 10.0

#: A command's id: required and non-empty, since it attributes, dedupes and journals it.
CommandId = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
LearningRate = Annotated[float, msgspec.Meta(gt=0.0, le=MAX_LEARNING_RATE)]
Reason = Annotated[str, msgspec.Meta(max_length=64)]
Annotations = Annotated[dict[str, str], msgspec.Meta(max_length=8)]


class AdaptationCommand(
    msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, tag="AdaptationCommand.v2"
):
    """One decision of the controller for one seed slot of one worker.

    The subject is named by `target_seed_id` and/or `target_slot_id`. Values are checked at
    decode time, bounds by type (alpha and confidence in [0, 1], the learning rate up to
    `MAX_LEARNING_RATE`, past which it would break training) and the cross-field rules (a
    GERMINATE names a blueprint, ...) in `__post_init__`, which msgspec runs on decode too.
    `command_id` has no default: the sender names every command, the reader never invents
    an id for one.
    """

    command_id: CommandId
    timestamp: datetime = msgspec.field(default_factory=utc_now)
    command_type: CommandType = CommandType.GERMINATE
    target_seed_id: Ident | None = None
    target_slot_id: Ident | None = None
    blueprint_id: Ident | None = None
    target_stage: SeedStage | None = None
    alpha_value: Unit | None = None
    learning_rate: LearningRate | None = None
    reason: Reason = ""
    confidence: Unit = 1.0
    risk_level: RiskLevel = RiskLevel.GREEN
    annotations: Annotations = msgspec.field(default_factory=dict)
    #: The controller's per-worker journal sequence (1, 2, ...); 0 for an unjournaled command.
    sequence: Count = 0

    def __post_init__(self) -> None:
        _check_rules(self)


class AdaptationCommandV1(
    msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, tag="AdaptationCommand.v1"
):
    """The v1 contract, read only to be lifted to v2 by `lift_v1`.

    Its `command_id` defaulted to a fresh id at decode time; here a missing one stays
    `UNSET` (the locked schema alike: optional, no default), so the lift can refuse it.
    """

    command_id: Ident | UnsetType = UNSET
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
    sequence: Count = 0

    def __post_init__(self) -> None:
        _check_rules(self)


def lift_v1(old: AdaptationCommandV1) -> AdaptationCommand:
    """The v2 command a v1 one said; refuses one without an id or above the v2 bounds."""
    if not old.command_id:
        raise ContractError(
            RejectReason.INVALID_VALUE,
            "AdaptationCommand.v1 carries no command_id, and none is invented for it",
            "$.command_id",
        )
    if old.learning_rate is not None and old.learning_rate > MAX_LEARNING_RATE:
        raise ContractError(
            RejectReason.INVALID_VALUE,
            f"AdaptationCommand.v1: learning_rate {old.learning_rate:g} is above the bound"
            f" {MAX_LEARNING_RATE:g}",
            "$.learning_rate",
        )
    return AdaptationCommand(**msgspec.structs.asdict(old))


def _check_rules(command: AdaptationCommand | AdaptationCommandV1) -> None:
    """The cross-field rules, the same in every major."""
    kind = command.command_type
    if kind is CommandType.GERMINATE and not command.blueprint_id:
        raise ValueError("GERMINATE needs a blueprint_id")
    if kind is CommandType.SET_ALPHA and command.alpha_value is None:
        raise ValueError("SET_ALPHA needs an alpha_value")
    if kind is CommandType.SET_LEARNING_RATE and command.learning_rate is None:
        raise ValueError("SET_LEARNING_RATE needs a learning_rate")
    if kind is not CommandType.REQUEST_STATE and not (
        command.target_seed_id or command.target_slot_id
    ):
        raise ValueError(f"{kind.name} needs a target_seed_id or target_slot_id")


class AckOutcome(enum.IntEnum):
    """What a worker did with a command."""

    APPLIED = 1
    REJECTED = 2
    DUPLICATE = 3


class AckReason(enum.StrEnum):
    """Why a worker rejected a command; the value (a name in lower case) is the ack's `reason`.

    A command refused by the bus or the lifecycle guard carries its `RejectReason` by name
    (`AckReason[reject.name]`); the rest are the worker's own judgements while applying it.
    """

    #: An APPLIED or DUPLICATE ack gives no reason.
    NONE = ""
    MALFORMED = "malformed"
    FRAME_COUNT = "frame_count"
    OVERSIZE = "oversize"
    BAD_HEADER = "bad_header"
    UNKNOWN_TAG = "unknown_tag"
    UNSUPPORTED_VERSION = "unsupported_version"
    INVALID_VALUE = "invalid_value"
    DUPLICATE = "duplicate"
    OUT_OF_ORDER = "out_of_order"
    STALE = "stale"
    ILLEGAL_TRANSITION = "illegal_transition"
    UNKNOWN_TARGET = "unknown_target"
    OVER_BUDGET = "over_budget"
    HANDLER_ERROR = "handler_error"
    BAD_TOPIC = "bad_topic"
    UNAUTHENTICATED = "unauthenticated"
    FORGED_SENDER = "forged_sender"
    NOT_PERMITTED = "not_permitted"
    FUTURE_INCARNATION = "future_incarnation"
    HANDSHAKE_FAILED = "handshake_failed"
    CONNECTION_DROPPED = "connection_dropped"
    TOO_MANY_SUBSCRIPTIONS = "too_many_subscriptions"
    #: The blueprint's gate for the target stage did not pass.
    GATE_FAILED = "gate_failed"
    #: No seed module is registered under the command's blueprint.
    UNKNOWN_BLUEPRINT = "unknown_blueprint"
    #: The seed module does not preserve the shape of the slot it would sit in.
    SHAPE_MISMATCH = "shape_mismatch"
    #: Carrying the command out raised; the detail names the error.
    APPLY_FAILED = "apply_failed"


class CommandAck(
    msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, tag="CommandAck.v2"
):
    """A worker's answer to one command: applied, rejected (with why) or already seen."""

    command_id: Ident
    worker_id: Ident
    outcome: AckOutcome
    command_type: CommandType
    sequence: int = 0
    reason: AckReason = AckReason.NONE
    detail: Text = ""
    stage_after: SeedStage | None = None
    epoch: int = 0
    duration_ms: Finite = 0.0


class CommandAckV1(
    msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, tag="CommandAck.v1"
):
    """The v1 ack, whose `reason` was a free string; read only to be lifted by `lift_ack_v1`."""

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


def lift_ack_v1(old: CommandAckV1) -> CommandAck:
    """The v2 ack a v1 one said; refuses a reason that names no `AckReason`."""
    fields = msgspec.structs.asdict(old)
    try:
        fields["reason"] = AckReason(old.reason)
    except ValueError:
        raise ContractError(
            RejectReason.INVALID_VALUE,
            f"CommandAck.v1: reason {old.reason!r} is not an AckReason",
            "$.reason",
        ) from None
    return CommandAck(**fields)


class WorkerHello(
    msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, tag="WorkerHello.v1"
):
    """A (re)starting worker names the last command sequence it applied, to get the rest.

    With `finished`, it is a farewell: the worker's run is over, it applied through
    `last_applied_sequence` and will apply nothing more. The controller settles the rest as
    unapplied and answers with the same hello on `cmd.<worker>.`, so that the worker knows
    it was heard and may exit (a farewell lost in a partition is said again until then).
    """

    worker_id: Ident
    last_applied_sequence: Count = 0
    finished: bool = False
