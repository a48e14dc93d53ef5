"""The controller process: fast signals in, policy decisions out as commands, acks tracked."""

from __future__ import annotations

import time

import structlog

from bus import Channel, Envelope
from leyline import (
    SLOT_IDS,
    AckOutcome,
    AdaptationCommand,
    CommandAck,
    FastTrainingSignals,
    TelemetryEvent,
    TelemetryEventType,
)
from leyline.telemetry import CommandIssued
from services.controller.inference import Decision, InferenceLoop
from services.node import Node

_log = structlog.get_logger("leyline.controller")


class IssuedCommand:
    """A command sent and not yet acknowledged."""

    __slots__ = ("command", "issued_at", "slot_id", "worker_id")

    def __init__(self, worker_id: str, slot_id: str, command: AdaptationCommand) -> None:
        self.worker_id = worker_id
        self.slot_id = slot_id
        self.command = command
        self.issued_at = time.monotonic()


class Controller:
    """Keeps the freshest signal per (worker, slot), decides in micro-batches, sends commands.

    A slot with a command in flight is not decided again until its ack arrives, so one
    plateau never becomes two germinations. Reported stage changes pass the lifecycle guard
    (`TransitionGuard` on the report channel) before the controller believes them.
    """

    def __init__(self, node: Node, loop: InferenceLoop, topology: str = "cnn") -> None:
        self.node = node
        self.loop = loop
        self.slots = SLOT_IDS[topology]
        self.in_flight: dict[str, IssuedCommand] = {}
        self.applied = 0
        self.rejected = 0
        self.issued = 0
        node.subscriber.on(Channel.SIG, self._on_signal)
        node.subscriber.on(Channel.ACK, self._on_ack)

    def tick(self) -> None:
        """Decide whatever batches are ready and publish their commands."""
        for decision in self.loop.step():
            self._act(decision)

    def run(self) -> None:
        self.node.run(self.tick, timeout_ms=self._timeout_ms())

    def _timeout_ms(self) -> int:
        return max(1, int(self.loop.batcher.max_wait_s * 1000))

    def _busy(self, worker_id: str, slot_id: str) -> bool:
        return any(
            issued.worker_id == worker_id and issued.slot_id == slot_id
            for issued in self.in_flight.values()
        )

    def _on_signal(self, envelope: Envelope) -> None:
        signal: FastTrainingSignals = envelope.message
        if signal.slot_index >= len(self.slots):
            _log.warning("signal for an unknown slot", slot_index=signal.slot_index)
            return
        worker_id = envelope.header.sender
        slot_id = self.slots[signal.slot_index]
        if not self._busy(worker_id, slot_id):
            self.loop.submit(worker_id, slot_id, signal)

    def _act(self, decision: Decision) -> None:
        command = decision.command
        if command is None or self._busy(decision.worker_id, decision.slot_id):
            return
        self.in_flight[command.command_id] = IssuedCommand(
            decision.worker_id, decision.slot_id, command
        )
        self.node.publish(Channel.CMD, command, scope=decision.worker_id)
        self.issued += 1
        self.node.emit(
            TelemetryEvent(
                event_type=TelemetryEventType.COMMAND_ISSUED,
                payload=CommandIssued(
                    command_id=command.command_id,
                    command_type=command.command_type.name,
                    worker_id=decision.worker_id,
                ),
                slot_id=decision.slot_id,
                epoch=decision.epoch,
                message=f"{decision.action.name} ({command.reason})",
            )
        )
        _log.info(
            "command issued",
            worker=decision.worker_id,
            slot=decision.slot_id,
            action=decision.action.name,
            reason=command.reason,
        )

    def _on_ack(self, envelope: Envelope) -> None:
        ack: CommandAck = envelope.message
        issued = self.in_flight.pop(ack.command_id, None)
        if issued is None:
            return
        if ack.outcome is AckOutcome.REJECTED:
            self.rejected += 1
            _log.warning(
                "command rejected",
                worker=ack.worker_id,
                command=ack.command_type.name,
                reason=ack.reason,
                detail=ack.detail,
            )
        else:
            self.applied += 1
