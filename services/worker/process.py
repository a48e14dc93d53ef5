"""The worker process: train an epoch, publish what happened, apply commands exactly once.

Commands carry the controller's per-worker journal sequence (1, 2, ...). The worker applies
them in sequence order, once each: a command it has seen is acknowledged again (never
re-applied, never judged again), one that arrives ahead of a missing predecessor waits, and a
hello naming the last applied sequence asks the controller for what is missing. Only then is
a command judged by the lifecycle guard, against the stages at its turn. Nothing the bus
refused is applied; a command refused at decode is answered REJECTED in its place in the
sequence. Each applied command and each epoch is checkpointed atomically before it is
acknowledged, so a restarted worker resumes exactly where its acknowledgements say it was;
state queries change nothing and are not checkpointed on their own (answered again after a
crash, which is harmless).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import structlog
import torch

from bus import Channel, Envelope, Rejection, topic
from leyline import AckOutcome, AckReason, CommandAck, CommandType, WorkerHello
from services.node import Node
from services.worker.ledger import CommandLedger, Pending, RefusedCommand, attribute
from services.worker.outcome import CommandOutcome
from services.worker.trainer import EpochReport, Trainer

_log = structlog.get_logger("leyline.worker")
#: Commands held while a predecessor is missing.
MAX_WAITING = 256


class Checkpoint:
    """An atomic checkpoint file: written beside, fsynced, then renamed over the old one."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def save(self, state: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_suffix(".partial")
        with partial.open("wb") as file:
            torch.save(state, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(partial, self.path)

    def load(self) -> dict[str, Any] | None:
        if not self.path.is_file():
            return None
        state: dict[str, Any] = torch.load(self.path, weights_only=True)
        return state


class Worker:
    """One training worker on the bus."""

    def __init__(
        self,
        node: Node,
        trainer: Trainer,
        checkpoint: Checkpoint,
        *,
        epochs: int,
        command_window_s: float = 0.1,
    ) -> None:
        self.node = node
        self.trainer = trainer
        self.model = trainer.model
        self.worker_id = self.model.worker_id
        self.checkpoint = checkpoint
        self.ledger = CommandLedger()
        self.epochs = epochs
        self.command_window_s = command_window_s
        self._next_hello = 0.0
        self._commands = topic(Channel.CMD, self.worker_id).decode()
        self.resumed = self._resume()
        node.subscriber.on(Channel.CMD, self._on_command)
        node.subscriber.on_rejection(self._on_rejection)

    # -- lifecycle of the process ------------------------------------------------------------

    def connect(self, timeout_s: float = 30.0) -> bool:
        """Wait until the controller and the sink hear us and we hear the controller."""
        publisher = self.node.publisher
        deadline = time.monotonic() + timeout_s
        wanted = [f"{c.value}.{self.worker_id}.".encode() for c in (Channel.SIG, Channel.TEL)]
        while time.monotonic() < deadline:
            self.node.pump(20)
            heard = all(publisher.wait_for_subscribers(p, 1, 0.0) for p in wanted)
            if heard and self.node.subscriber.wait_ready(0.0):
                self.hello()
                return True
        _log.warning("peers not ready, starting anyway", timeout_s=timeout_s)
        self.hello()
        return False

    def hello(self) -> None:
        """Name the last applied command so the controller resends anything after it."""
        hello = WorkerHello(
            worker_id=self.worker_id, last_applied_sequence=self.ledger.last_applied
        )
        self.node.publish(Channel.ACK, hello)

    def run(self) -> None:
        """Train until `epochs` are done or the process is told to stop."""
        while self.trainer.epoch < self.epochs and not self.node.stopping:
            report = self.trainer.tick()
            self._publish_epoch(report)
            self._save()
            self._settle(self.command_window_s)
        self._settle(0.5)
        self._save()  # the state queries answered since the last checkpoint

    def _settle(self, seconds: float) -> None:
        """Pump the bus for `seconds`, applying the commands that arrive."""
        deadline = time.monotonic() + seconds
        while not self.node.stopping:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self.node.pump(max(1, int(remaining * 1000)))

    # -- publishing --------------------------------------------------------------------------

    def _publish_epoch(self, report: EpochReport) -> None:
        node = self.node
        for event in report.events:
            node.emit(event)
        for telemetry in report.seed_telemetry:
            node.publish(Channel.REP, telemetry)
        for state in report.reports:
            node.publish(Channel.REP, state)
        for signal in report.fast:
            node.publish(Channel.SIG, signal)
        node.publisher.service()

    def _publish_outcome(self, outcome: CommandOutcome, ack: CommandAck) -> None:
        for event in outcome.events:
            self.node.emit(event)
        if outcome.field_report is not None:
            self.node.publish(Channel.REP, outcome.field_report)
        for state in outcome.reports:
            self.node.publish(Channel.REP, state)
        self.node.publish(Channel.ACK, ack)

    # -- commands ----------------------------------------------------------------------------

    def _on_command(self, envelope: Envelope) -> None:
        self._receive(envelope.message)

    def _on_rejection(self, rejection: Rejection) -> None:
        """Nothing the bus refused is applied. A command refused at decode is still answered
        (REJECTED, at its turn) when its payload names it; any other refusal is only counted
        and reported by the bus."""
        if not rejection.payload or rejection.topic != self._commands:
            return
        refused = attribute(rejection)
        if refused is not None:
            self._receive(refused)

    def _receive(self, command: Pending) -> None:
        ledger = self.ledger
        prior = ledger.acks.get(command.command_id)
        if prior is not None:
            self.node.publish(Channel.ACK, prior)
            return
        sequence = command.sequence
        if sequence < 1:
            self._refuse_unjournaled(command)
            return
        if sequence <= ledger.last_applied:
            self._ack_duplicate(command)
            return
        if sequence > ledger.last_applied + 1:
            if len(ledger.waiting) < MAX_WAITING:
                ledger.waiting[sequence] = command
            if time.monotonic() >= self._next_hello:  # at most one resend request a second
                self._next_hello = time.monotonic() + 1.0
                self.hello()
            return
        self._apply(command)
        while (following := ledger.waiting.pop(ledger.last_applied + 1, None)) is not None:
            self._apply(following)

    def _apply(self, command: Pending) -> None:
        """Carry out (or answer the refusal of) the next command in journal order.

        Its ack follows the checkpoint that records it, except for a state query: it changes
        nothing, so it is not worth an fsync; after a crash it may be answered again.
        """
        started = time.perf_counter()
        if isinstance(command, RefusedCommand):
            outcome = command.outcome(self.worker_id, self.trainer.epoch)
        else:
            outcome = self.model.apply_command(command)
        ack = outcome.ack(command.sequence, (time.perf_counter() - started) * 1000)
        self.ledger.last_applied = command.sequence
        self.ledger.remember(ack)
        if command.command_type is not CommandType.REQUEST_STATE:
            self._save()
        self._publish_outcome(outcome, ack)
        _log.info(
            "command applied" if outcome.applied else "command rejected",
            command=command.command_type.name,
            sequence=command.sequence,
            slot=outcome.slot_id,
            reason=outcome.reason,
        )

    def _refuse_unjournaled(self, command: Pending) -> None:
        """A command without a journal sequence cannot be placed in order: refused, and not
        remembered, so it cannot stand in for a journaled command with the same id."""
        ack = CommandAck(
            command_id=command.command_id,
            worker_id=self.worker_id,
            outcome=AckOutcome.REJECTED,
            command_type=command.command_type,
            reason=AckReason.INVALID_VALUE,
            detail="a controller command carries its journal sequence (>= 1), this one has 0",
            epoch=self.trainer.epoch,
        )
        self.node.publish(Channel.ACK, ack)

    def _ack_duplicate(self, command: Pending) -> None:
        ack = CommandAck(
            command_id=command.command_id,
            worker_id=self.worker_id,
            outcome=AckOutcome.DUPLICATE,
            command_type=command.command_type,
            sequence=command.sequence,
            detail=f"sequence {command.sequence} <= last applied {self.ledger.last_applied}",
            epoch=self.trainer.epoch,
        )
        self.node.publish(Channel.ACK, ack)

    # -- checkpoints -------------------------------------------------------------------------

    def _save(self) -> None:
        self.checkpoint.save(
            {"trainer": self.trainer.state_dict(), "commands": self.ledger.state_dict()}
        )

    def _resume(self) -> bool:
        state = self.checkpoint.load()
        if state is None:
            return False
        self.trainer.load_state_dict(state["trainer"])
        self.ledger.load_state_dict(state["commands"])
        _log.info(
            "resumed from checkpoint",
            epoch=self.trainer.epoch,
            last_applied=self.ledger.last_applied,
        )
        return True
