"""Builders for the telemetry events a worker emits, each with its typed payload."""

from __future__ import annotations

from typing import Protocol

from leyline import (
    AckReason,
    AdaptationCommand,
    CommandType,
    SeedStage,
    Severity,
    TelemetryEvent,
    TelemetryEventType,
)
from leyline.telemetry import (
    CommandExecuted,
    CommandFailed,
    GradientAnomaly,
    IsolationViolation,
    SeedCulled,
    SeedFossilized,
    SeedGerminated,
    SeedStageChanged,
)

_T = TelemetryEventType


class CommandRef(Protocol):
    """What names a command in an event: a decoded command, or one refused at decode."""

    @property
    def command_id(self) -> str: ...
    @property
    def command_type(self) -> CommandType: ...
    @property
    def sequence(self) -> int: ...


def stage_changed(
    slot_id: str, seed_id: str, from_stage: SeedStage, to_stage: SeedStage, epoch: int
) -> TelemetryEvent:
    return TelemetryEvent(
        event_type=_T.SEED_STAGE_CHANGED,
        payload=SeedStageChanged(seed_id=seed_id, from_stage=from_stage, to_stage=to_stage),
        seed_id=seed_id or None,
        slot_id=slot_id,
        epoch=epoch,
        message=f"{from_stage.name} -> {to_stage.name}",
    )


def seed_germinated(
    slot_id: str, seed_id: str, blueprint_id: str, params: int, epoch: int
) -> TelemetryEvent:
    return TelemetryEvent(
        event_type=_T.SEED_GERMINATED,
        payload=SeedGerminated(seed_id=seed_id, blueprint_id=blueprint_id, params=params),
        seed_id=seed_id,
        slot_id=slot_id,
        epoch=epoch,
    )


def seed_fossilized(
    slot_id: str,
    payload: SeedFossilized,
    epoch: int,
) -> TelemetryEvent:
    return TelemetryEvent(
        event_type=_T.SEED_FOSSILIZED,
        payload=payload,
        seed_id=payload.seed_id,
        slot_id=slot_id,
        epoch=epoch,
    )


def seed_culled(slot_id: str, payload: SeedCulled, epoch: int) -> TelemetryEvent:
    return TelemetryEvent(
        event_type=_T.SEED_CULLED,
        payload=payload,
        seed_id=payload.seed_id,
        slot_id=slot_id,
        epoch=epoch,
        severity=Severity.WARNING,
    )


def isolation_violation(slot_id: str, seed_id: str, violations: int, epoch: int) -> TelemetryEvent:
    return TelemetryEvent(
        event_type=_T.ISOLATION_VIOLATION,
        payload=IsolationViolation(seed_id=seed_id, violations=violations),
        seed_id=seed_id,
        slot_id=slot_id,
        epoch=epoch,
        severity=Severity.WARNING,
    )


def gradient_anomaly(slot_id: str, payload: GradientAnomaly, epoch: int) -> TelemetryEvent:
    return TelemetryEvent(
        event_type=_T.GRADIENT_ANOMALY,
        payload=payload,
        seed_id=payload.seed_id,
        slot_id=slot_id,
        epoch=epoch,
        severity=Severity.WARNING,
    )


def command_executed(
    command: AdaptationCommand, slot_id: str | None, seed_id: str | None,
    stage_after: SeedStage | None, epoch: int,
) -> TelemetryEvent:  # fmt: skip
    return TelemetryEvent(
        event_type=_T.COMMAND_EXECUTED,
        payload=CommandExecuted(
            command_id=command.command_id,
            command_type=command.command_type.name,
            stage_after=stage_after,
            sequence=command.sequence,
        ),
        seed_id=seed_id or None,
        slot_id=slot_id,
        epoch=epoch,
    )


def command_failed(
    command: CommandRef, slot_id: str | None, seed_id: str | None,
    reason: AckReason, detail: str, epoch: int,
) -> TelemetryEvent:  # fmt: skip
    return TelemetryEvent(
        event_type=_T.COMMAND_FAILED,
        payload=CommandFailed(
            command_id=command.command_id,
            command_type=command.command_type.name,
            reason=reason,
            detail=detail,
            sequence=command.sequence,
        ),
        seed_id=seed_id or None,
        slot_id=slot_id,
        epoch=epoch,
        severity=Severity.WARNING,
        message=detail[:1024],
    )
