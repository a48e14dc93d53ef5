"""What applying one command produced: the ack's fields and everything the process publishes."""

from __future__ import annotations

from dataclasses import dataclass, field

from leyline import (
    AckOutcome,
    AckReason,
    CommandAck,
    CommandType,
    FieldReport,
    SeedStage,
    SeedStateReport,
    TelemetryEvent,
)


@dataclass
class CommandOutcome:
    """The result of `WorkerModel.apply_command`: never raised, always returned.

    `events` holds the lifecycle events and, last, COMMAND_EXECUTED or COMMAND_FAILED;
    `field_report` is set when the command ended a seed's life; `reports` holds the state of
    every slot for REQUEST_STATE, else of the slot whose stage the command changed.
    """

    command_id: str
    command_type: CommandType
    worker_id: str
    outcome: AckOutcome
    epoch: int
    reason: AckReason = AckReason.NONE
    detail: str = ""
    slot_id: str | None = None
    seed_id: str | None = None
    stage_after: SeedStage | None = None
    events: list[TelemetryEvent] = field(default_factory=list)
    field_report: FieldReport | None = None
    reports: list[SeedStateReport] = field(default_factory=list)

    @property
    def applied(self) -> bool:
        return self.outcome is AckOutcome.APPLIED

    def ack(self, sequence: int = 0, duration_ms: float = 0.0) -> CommandAck:
        """The acknowledgement to publish, with the bus's sequence number filled in."""
        return CommandAck(
            command_id=self.command_id,
            worker_id=self.worker_id,
            outcome=self.outcome,
            command_type=self.command_type,
            sequence=sequence,
            reason=self.reason,
            detail=self.detail[:1024],
            stage_after=self.stage_after,
            epoch=self.epoch,
            duration_ms=duration_ms,
        )
