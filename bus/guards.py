"""Semantic guards: the lifecycle rules applied to commands and to reported transitions."""

from __future__ import annotations

from collections.abc import Callable

from bus.pipeline import Envelope
from leyline import (
    AdaptationCommand,
    CommandType,
    ContractError,
    LifecycleGuard,
    RejectReason,
    SeedStage,
    SeedStateReport,
    TelemetryEvent,
    Verdict,
)
from leyline.telemetry import SeedStageChanged


def _refusal(verdict: Verdict) -> ContractError | None:
    if verdict.allowed:
        return None
    return ContractError(verdict.reason or RejectReason.ILLEGAL_TRANSITION, verdict.detail)


class CommandGuard:
    """A worker's check of each command against the stages of its own slots.

    `resolve_slot` names the slot a command addresses (None when it addresses nothing the
    worker has). The guard only judges; the worker records transitions when it applies them.
    """

    def __init__(
        self,
        lifecycle: LifecycleGuard,
        worker_id: str,
        resolve_slot: Callable[[AdaptationCommand], str | None],
    ) -> None:
        self._lifecycle = lifecycle
        self._worker = worker_id
        self._resolve = resolve_slot

    def __call__(self, envelope: Envelope) -> ContractError | None:
        command = envelope.message
        if not isinstance(command, AdaptationCommand):
            return None
        if command.command_type is CommandType.REQUEST_STATE:
            return None  # a state query addresses the worker as a whole, never one slot
        slot = self._resolve(command)
        if slot is None:
            return ContractError(
                RejectReason.UNKNOWN_TARGET,
                f"{self._worker} has no slot for seed {command.target_seed_id!r} "
                f"/ slot {command.target_slot_id!r}",
            )
        return _refusal(self._lifecycle.check_command(self._worker, slot, command))


class TransitionGuard:
    """Checks the stage changes workers report (events and state reports) and records them."""

    def __init__(self, lifecycle: LifecycleGuard | None = None) -> None:
        self.lifecycle = lifecycle or LifecycleGuard()

    def __call__(self, envelope: Envelope) -> ContractError | None:
        message = envelope.message
        worker = envelope.header.sender
        if isinstance(message, TelemetryEvent) and isinstance(message.payload, SeedStageChanged):
            slot = message.slot_id or message.payload.seed_id
            change = message.payload
            return self._judge(worker, slot, change.from_stage, change.to_stage)
        if isinstance(message, SeedStateReport) and message.previous_stage != message.stage:
            return self._judge(worker, message.slot_id, message.previous_stage, message.stage)
        return None

    def _judge(
        self, worker: str, slot: str, from_stage: SeedStage, to_stage: SeedStage
    ) -> ContractError | None:
        verdict = self.lifecycle.check_reported(worker, slot, from_stage, to_stage)
        if verdict.allowed:
            self.lifecycle.record(worker, slot, to_stage)
        return _refusal(verdict)
