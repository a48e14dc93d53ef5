"""Telemetry: events with a typed payload per event type, and the per-seed snapshot."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Annotated

import msgspec

from leyline._types import Count, Finite, Ident, NonNegative, Percent, Text, Unit, new_id, utc_now
from leyline.commands import AckReason
from leyline.errors import ContractError, RejectReason
from leyline.lifecycle import SeedStage

__all__ = [
    "EXPLODING_GRADIENT_NORM",
    "MAX_LIVENESS_PEERS",
    "PAYLOAD_FOR_EVENT",
    "VANISHING_GRADIENT_NORM",
    "CommandExecuted",
    "CommandFailed",
    "CommandIssued",
    "ContractViolation",
    "EpochCompleted",
    "GradientAnomaly",
    "ImprovementDetected",
    "IsolationViolation",
    "PeerLiveness",
    "PeerSilence",
    "PerformanceDegradation",
    "PlateauDetected",
    "SeedCulled",
    "SeedFossilized",
    "SeedGerminated",
    "SeedStageChanged",
    "SeedTelemetry",
    "Severity",
    "TelemetryEvent",
    "TelemetryEventType",
    "TelemetryEventV1",
    "TelemetryPayload",
    "gradient_health",
    "lift_telemetry_v1",
]


class TelemetryEventType(enum.IntEnum):
    """The kinds of event; 1-13 are the spec's, the rest are the bus's own."""

    SEED_GERMINATED = 1
    SEED_STAGE_CHANGED = 2
    SEED_FOSSILIZED = 3
    SEED_CULLED = 4
    EPOCH_COMPLETED = 5
    PLATEAU_DETECTED = 6
    IMPROVEMENT_DETECTED = 7
    ISOLATION_VIOLATION = 8
    GRADIENT_ANOMALY = 9
    PERFORMANCE_DEGRADATION = 10
    COMMAND_ISSUED = 11
    COMMAND_EXECUTED = 12
    COMMAND_FAILED = 13
    CONTRACT_VIOLATION = 14
    PEER_STALE = 15
    PEER_RECOVERED = 16


class Severity(enum.IntEnum):
    """How loud an event is, ordered so that severities compare."""

    DEBUG = 10
    INFO = 20
    WARNING = 30
    ERROR = 40
    CRITICAL = 50


class _Payload(msgspec.Struct, frozen=True, kw_only=True, tag_field="kind"):
    pass


class SeedGerminated(_Payload, frozen=True, tag="SeedGerminated"):
    seed_id: Ident
    blueprint_id: Ident
    params: Count


class SeedStageChanged(_Payload, frozen=True, tag="SeedStageChanged"):
    seed_id: Ident
    from_stage: SeedStage
    to_stage: SeedStage


class SeedFossilized(_Payload, frozen=True, tag="SeedFossilized"):
    seed_id: Ident
    blueprint_id: Ident
    improvement: Finite
    params_added: Count
    epochs_total: Count
    epochs_in_stage: Count


class SeedCulled(_Payload, frozen=True, tag="SeedCulled"):
    seed_id: Ident
    blueprint_id: Ident
    reason: Text
    improvement: Finite
    epochs_total: Count
    epochs_in_stage: Count


class EpochCompleted(_Payload, frozen=True, tag="EpochCompleted"):
    train_loss: NonNegative
    val_loss: NonNegative
    train_accuracy: Percent
    val_accuracy: Percent
    duration_ms: NonNegative


class PlateauDetected(_Payload, frozen=True, tag="PlateauDetected"):
    plateau_epochs: Count


class ImprovementDetected(_Payload, frozen=True, tag="ImprovementDetected"):
    accuracy_delta: Finite


class IsolationViolation(_Payload, frozen=True, tag="IsolationViolation"):
    seed_id: Ident
    violations: Count


class GradientAnomaly(_Payload, frozen=True, tag="GradientAnomaly"):
    seed_id: Ident
    gradient_norm: NonNegative
    has_vanishing: bool
    has_exploding: bool


class PerformanceDegradation(_Payload, frozen=True, tag="PerformanceDegradation"):
    metric: Ident
    value: Finite
    threshold: Finite


class CommandIssued(_Payload, frozen=True, tag="CommandIssued"):
    command_id: Ident
    command_type: Ident
    worker_id: Ident


class CommandExecuted(_Payload, frozen=True, tag="CommandExecuted"):
    command_id: Ident
    command_type: Ident
    stage_after: SeedStage | None = None
    sequence: Count = 0


class CommandFailed(_Payload, frozen=True, tag="CommandFailed"):
    """A command the worker rejected; `reason` is the one its REJECTED ack carries."""

    command_id: Ident
    command_type: Ident
    reason: AckReason
    detail: Text = ""
    sequence: Count = 0


class ContractViolation(_Payload, frozen=True, tag="ContractViolation"):
    """A message a subscriber refused: why, from whom, on which topic, at which field.

    `command_id` names a refused command when it could be read, so the refusal can be
    matched with the command's journal entry and its REJECTED ack. `reason` is the
    `RejectReason` by name, as an `AckReason` (which names every one of them).
    """

    reason: AckReason
    sender: Ident
    topic: Ident
    detail: Text = ""
    path: Text = "$"
    command_id: Ident = ""


#: Peers one liveness event names at most: hundreds changing at one check (a starved host)
#: make a few events, not hundreds, each inside the payload budget (~150 B a peer at most).
MAX_LIVENESS_PEERS = 256


class PeerSilence(msgspec.Struct, frozen=True, kw_only=True):
    """One more peer of a `PeerLiveness` event, and how long it had been silent."""

    peer: Ident
    silent_for_ms: NonNegative


class PeerLiveness(_Payload, frozen=True, tag="PeerLiveness"):
    """Peers that went silent (stale) or came back at one liveness check: `peer` and each of
    `others` (one event for all of them, so a reader that counts peers counts both)."""

    peer: Ident
    channel: Ident
    silent_for_ms: NonNegative
    others: Annotated[list[PeerSilence], msgspec.Meta(max_length=MAX_LIVENESS_PEERS - 1)] = (
        msgspec.field(default_factory=list)
    )

    def peers(self) -> list[tuple[str, float]]:
        """Every peer this event reports, with its silence in ms."""
        return [(self.peer, self.silent_for_ms)] + [(o.peer, o.silent_for_ms) for o in self.others]


TelemetryPayload = (
    SeedGerminated
    | SeedStageChanged
    | SeedFossilized
    | SeedCulled
    | EpochCompleted
    | PlateauDetected
    | ImprovementDetected
    | IsolationViolation
    | GradientAnomaly
    | PerformanceDegradation
    | CommandIssued
    | CommandExecuted
    | CommandFailed
    | ContractViolation
    | PeerLiveness
)

#: The payload type each event type carries.
PAYLOAD_FOR_EVENT: dict[TelemetryEventType, type[_Payload]] = {
    TelemetryEventType.SEED_GERMINATED: SeedGerminated,
    TelemetryEventType.SEED_STAGE_CHANGED: SeedStageChanged,
    TelemetryEventType.SEED_FOSSILIZED: SeedFossilized,
    TelemetryEventType.SEED_CULLED: SeedCulled,
    TelemetryEventType.EPOCH_COMPLETED: EpochCompleted,
    TelemetryEventType.PLATEAU_DETECTED: PlateauDetected,
    TelemetryEventType.IMPROVEMENT_DETECTED: ImprovementDetected,
    TelemetryEventType.ISOLATION_VIOLATION: IsolationViolation,
    TelemetryEventType.GRADIENT_ANOMALY: GradientAnomaly,
    TelemetryEventType.PERFORMANCE_DEGRADATION: PerformanceDegradation,
    TelemetryEventType.COMMAND_ISSUED: CommandIssued,
    TelemetryEventType.COMMAND_EXECUTED: CommandExecuted,
    TelemetryEventType.COMMAND_FAILED: CommandFailed,
    TelemetryEventType.CONTRACT_VIOLATION: ContractViolation,
    TelemetryEventType.PEER_STALE: PeerLiveness,
    TelemetryEventType.PEER_RECOVERED: PeerLiveness,
}


class TelemetryEvent(msgspec.Struct, kw_only=True, omit_defaults=True, tag="TelemetryEvent.v2"):
    """One thing that happened, with the payload its event type prescribes."""

    event_type: TelemetryEventType
    payload: TelemetryPayload
    event_id: Ident = msgspec.field(default_factory=new_id)
    timestamp: datetime = msgspec.field(default_factory=utc_now)
    seed_id: Ident | None = None
    slot_id: Ident | None = None
    epoch: Count | None = None
    message: Text = ""
    severity: Severity = Severity.INFO

    def __post_init__(self) -> None:
        expected = PAYLOAD_FOR_EVENT[self.event_type]
        if type(self.payload) is not expected:
            raise ValueError(
                f"{self.event_type.name} carries {expected.__name__}, "
                f"not {type(self.payload).__name__}"
            )


class SeedTelemetry(msgspec.Struct, kw_only=True, tag="SeedTelemetry.v1"):
    """A per-seed snapshot refreshed each epoch from gradient statistics."""

    seed_id: Ident
    blueprint_id: Ident = ""
    layer_id: Ident = ""
    gradient_norm: NonNegative = 0.0
    gradient_health: Unit = 1.0
    has_vanishing: bool = False
    has_exploding: bool = False
    accuracy: Percent = 0.0
    accuracy_delta: Finite = 0.0
    epochs_in_stage: Count = 0
    stage: SeedStage = SeedStage.DORMANT
    alpha: Unit = 0.0
    epoch: Count = 0
    max_epochs: Count = 25
    captured_at: datetime = msgspec.field(default_factory=utc_now)

    @staticmethod
    def feature_dim() -> int:
        return 10

    def to_features(self) -> list[float]:
        """The 10 model features, each in a bounded range (stage and epoch clamped)."""
        return [
            min(self.gradient_norm, 10.0) / 10.0,
            self.gradient_health,
            float(self.has_vanishing),
            float(self.has_exploding),
            min(self.epochs_in_stage, 50) / 50.0,
            self.accuracy / 100.0,
            max(-1.0, min(1.0, self.accuracy_delta / 10.0)),
            max(0.0, min((self.stage - 1) / 6.0, 1.0)),
            self.alpha,
            min(self.epoch / max(self.max_epochs, 1), 1.0),  # a run may outlive its plan
        ]


#: Vanishing below this per-parameter gradient norm, exploding above the next.
VANISHING_GRADIENT_NORM = 1e-7
EXPLODING_GRADIENT_NORM = 100.0


def gradient_health(vanishing_fraction: float, exploding_fraction: float) -> float:
    """1 - 0.5 x vanishing - 0.8 x exploding, clamped to [0, 1]."""
    return max(0.0, min(1.0, 1.0 - 0.5 * vanishing_fraction - 0.8 * exploding_fraction))


class CommandFailedV1(_Payload, frozen=True, tag="CommandFailed"):
    """The v1 payload, whose `reason` was a free string; read only to be lifted."""

    command_id: Ident
    command_type: Ident
    reason: Ident
    detail: Text = ""
    sequence: Count = 0


class ContractViolationV1(_Payload, frozen=True, tag="ContractViolation"):
    """The v1 payload, whose `reason` was a free string; read only to be lifted."""

    reason: Ident
    sender: Ident
    topic: Ident
    detail: Text = ""
    path: Text = "$"
    command_id: Ident = ""


_PayloadV1 = (
    SeedGerminated
    | SeedStageChanged
    | SeedFossilized
    | SeedCulled
    | EpochCompleted
    | PlateauDetected
    | ImprovementDetected
    | IsolationViolation
    | GradientAnomaly
    | PerformanceDegradation
    | CommandIssued
    | CommandExecuted
    | CommandFailedV1
    | ContractViolationV1
    | PeerLiveness
)

_LIFTED: dict[type[_Payload], type[_Payload]] = {
    CommandFailedV1: CommandFailed,
    ContractViolationV1: ContractViolation,
}


class TelemetryEventV1(msgspec.Struct, kw_only=True, omit_defaults=True, tag="TelemetryEvent.v1"):
    """The v1 event, its failure and violation reasons free strings; read only to be lifted."""

    event_type: TelemetryEventType
    payload: _PayloadV1
    event_id: Ident = msgspec.field(default_factory=new_id)
    timestamp: datetime = msgspec.field(default_factory=utc_now)
    seed_id: Ident | None = None
    slot_id: Ident | None = None
    epoch: Count | None = None
    message: Text = ""
    severity: Severity = Severity.INFO


def lift_telemetry_v1(old: TelemetryEventV1) -> TelemetryEvent:
    """The v2 event a v1 one said; refuses a reason that names no `AckReason`, or a payload
    that is not the one its event type prescribes."""
    fields = msgspec.structs.asdict(old)
    payload = old.payload
    lifted = _LIFTED.get(type(payload))
    if lifted is not None:
        inner = msgspec.structs.asdict(payload)
        try:
            inner["reason"] = AckReason(inner["reason"])
        except ValueError:
            raise ContractError(
                RejectReason.INVALID_VALUE,
                f"TelemetryEvent.v1: reason {inner['reason']!r} is not an AckReason",
                "$.payload.reason",
            ) from None
        fields["payload"] = lifted(**inner)
    try:
        return TelemetryEvent(**fields)
    except ValueError as exc:
        raise ContractError(RejectReason.INVALID_VALUE, str(exc), "$.payload") from None
