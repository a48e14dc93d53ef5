"""The controller process: fast signals in, policy decisions out as journaled commands.

Every command is committed to the journal before it is sent, numbered per worker. Unacked
commands are resent with exponential backoff; a worker's hello (on start or after a restart)
names the last sequence it applied and gets everything after it again, in order. Workers
deduplicate by command id and sequence, so a resend is acknowledged, never re-applied. A
worker's farewell (a finished hello) ends its run: what is still in flight to it is settled
UNAPPLIED, and the farewell is answered.
"""

from __future__ import annotations

import time
from typing import Any

import structlog

from bus import Channel, Envelope
from bus.columnar import SignalColumns
from leyline import (
    AckOutcome,
    CommandAck,
    ContractError,
    TelemetryEvent,
    TelemetryEventType,
    WorkerHello,
)
from leyline.actions import SLOT_IDS
from leyline.telemetry import CommandIssued
from services.controller.commands import command_type
from services.controller.inference import InferenceLoop
from services.controller.inflight import InFlight, InFlightTable
from services.controller.intake import SignalIntake
from services.controller.journal import CommandJournal, JournalEntry
from services.controller.pending import PendingSignal
from services.controller.policy import DecisionReason
from services.node import Node

_log = structlog.get_logger("leyline.controller")
MAX_BACKOFF_S = 30.0


class Controller:
    """Keeps the freshest signal per (worker, slot), decides in micro-batches, sends commands.

    A slot with a command in flight is not decided again until its ack arrives, so one
    plateau never becomes two germinations.
    """

    def __init__(
        self,
        node: Node,
        loop: InferenceLoop,
        journal: CommandJournal,
        *,
        topology: str = "cnn",
        ack_timeout_s: float = 2.0,
    ) -> None:
        self.node = node
        self.loop = loop
        self.journal = journal
        self.slots = SLOT_IDS[topology]
        self.ack_timeout_s = ack_timeout_s
        now = time.monotonic()
        # A restarted controller picks up what it had sent and not seen acknowledged.
        self.in_flight = InFlightTable()
        for entry in journal.unacked():
            self.in_flight.add(InFlight(entry, now + ack_timeout_s))
        #: Decisions the policy made (a WAIT included), and commands issued from them.
        self.decided = 0
        self.issued = 0
        self.applied = 0
        self.rejected = 0
        self.resent = 0
        #: Commands settled UNAPPLIED: in flight when their worker's run ended (its farewell).
        self.unapplied = 0
        #: Workers whose farewell was heard: nothing more is decided for them.
        self.finished: set[str] = set()
        #: Acks and hellos ignored because they speak for another worker than their sender.
        self.misattributed = 0
        #: Signals refused by the inference loop for a value that breaks the contract.
        self.refused_signals = 0
        loop.on_refused(self._refused_signal)
        self._intake = SignalIntake(self.slots, self.in_flight.busy_slots, loop.batcher)
        # Fast signals come in columns: each drain's rows straight into the batcher's table.
        node.subscriber.on_columns(Channel.SIG, self._on_signals)
        node.subscriber.on(Channel.ACK, self._on_ack)
        node.subscriber.on_liveness(self._on_liveness)

    def tick(self) -> None:
        """Decide the batches that are ready, publish their commands, resend overdue ones."""
        busy = self.in_flight.busy
        decisions = self.loop.step()
        self.decided += len(decisions)
        commands = decisions.commands()
        if len(commands):
            slots = zip(commands.worker_ids, commands.slot_ids, strict=True)
            finished = self.finished
            free = [
                i
                for i, (worker, slot) in enumerate(slots)
                if not busy(worker, slot) and worker not in finished
            ]
            if len(free) < len(commands):  # a slot awaiting an ack is not told again
                commands = commands.take(free)
            # One journal transaction for everything decided, committed before anything is sent.
            entries = self.journal.issue_batch(
                commands.worker_ids, commands.slot_ids, commands.command_ids, commands.payloads
            )
            columns = zip(
                commands.actions.tolist(), commands.reasons.tolist(), commands.epochs.tolist(),
                entries, strict=True,
            )  # fmt: skip
            for action, reason, epoch, entry in columns:
                self._act(action, reason, epoch, entry)
        now = time.monotonic()
        for flight in self.in_flight.values():
            if now >= flight.resend_at:
                self._send(flight.entry)
                flight.attempts += 1
                backoff = self.ack_timeout_s * 2 ** (flight.attempts - 1)
                flight.resend_at = now + min(backoff, MAX_BACKOFF_S)
                self.resent += 1

    def run(self) -> None:
        while not self.node.stopping:
            deadline = self.loop.deadline()
            wait = 0.05 if deadline is None else max(0.0, deadline - time.monotonic())
            self.node.pump(wait)
            self.tick()

    def _on_liveness(self, worker_id: str, stale: bool, silent_s: float) -> None:
        """A worker heard again after a silence (a partition, a pause) gets its unacked
        commands at the next tick, and their backoff starts again from `ack_timeout_s`: an
        ack lost in the cut is not left to a backoff that grew while the worker was
        unreachable, and may outlast the worker; nor is a resend that reached the commands
        link before the worker had subscribed again (pub/sub drops it) the last one."""
        if stale:
            return
        now = time.monotonic()
        for flight in self.in_flight.of_worker(worker_id):
            flight.resend_at = min(flight.resend_at, now)
            flight.attempts = 0

    def _on_signals(self, block: SignalColumns) -> None:
        """A drain's fast signals, as rows: each (worker, slot) not awaiting an ack is queued
        with its epoch, its features copied into the batcher's table in one step."""
        first = self._intake.unknown + 1
        for count, slot_index in enumerate(self._intake(block), first):
            if count & (count - 1) == 0:  # 1, 2, 4, ...: bounded
                _log.warning("signal for an unknown slot", slot_index=slot_index)

    @property
    def unknown_slots(self) -> int:
        """Signals for a slot index this topology does not have (never decided)."""
        return self._intake.unknown

    def _act(self, action_index: int, reason_code: int, epoch: int, entry: JournalEntry) -> None:
        self.in_flight.add(InFlight(entry, time.monotonic() + self.ack_timeout_s))
        self._send(entry)
        self.issued += 1
        action = self.loop.layout.actions(action_index)
        reason = DecisionReason(reason_code).text
        self.node.emit(
            TelemetryEvent(
                event_type=TelemetryEventType.COMMAND_ISSUED,
                payload=CommandIssued(
                    command_id=entry.command_id,
                    command_type=command_type(action).name,
                    worker_id=entry.worker_id,
                ),
                slot_id=entry.slot_id,
                epoch=epoch,
                message=f"{action.name} #{entry.sequence} ({reason})",
            )
        )
        _log.info(
            "command issued",
            worker=entry.worker_id,
            slot=entry.slot_id,
            sequence=entry.sequence,
            action=action.name,
            reason=reason,
        )

    def _send(self, entry: JournalEntry) -> None:
        self.node.publish(Channel.CMD, entry.command, scope=entry.worker_id)

    def _on_ack(self, envelope: Envelope[Any]) -> None:
        message = envelope.message
        sender = envelope.header.sender
        if isinstance(message, WorkerHello):
            if message.worker_id != sender:
                self._ignore("hello", sender, message.worker_id)
                return
            self._on_hello(message)
            return
        ack: CommandAck = message
        flight = self.in_flight.get(ack.command_id)
        if flight is None:
            return  # a repeated ack of a command already settled
        if sender != flight.entry.worker_id or ack.worker_id != sender:
            self._ignore("ack", sender, ack.worker_id)
            return
        self.in_flight.pop(ack.command_id)
        # A worker takes its commands in sequence order, so an ack of N means it took every
        # earlier one: one whose own ack was lost (in a partition) is settled now, not left to a
        # resend that may find the worker gone.
        self._settle_applied(sender, flight.entry.sequence - 1)
        # Every outcome settles the command: a REJECTED one (by the lifecycle guard, at
        # decode, or while applying) would be rejected again, so it is never resent.
        self.journal.acknowledge(ack.command_id, ack.outcome)
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

    def _settle_applied(self, worker: str, last: int) -> None:
        """Commands through `last` the worker applied, their acks lost (as its hello or a later
        ack says): settled as DUPLICATE."""
        for flight in self.in_flight.of_worker(worker):
            entry = flight.entry
            if entry.sequence <= last:
                self.journal.acknowledge(entry.command_id, AckOutcome.DUPLICATE)
                self.in_flight.pop(entry.command_id)

    def _farewell(self, worker: str, last: int) -> None:
        """The worker's run is over at `last`: what is still in flight to it will never be
        applied (settled UNAPPLIED), its queued signals are dropped, nothing more is decided
        for it, and the farewell is answered so that the worker may exit."""
        unapplied = [flight.entry.command_id for flight in self.in_flight.of_worker(worker)]
        if unapplied:
            for command_id in unapplied:
                self.in_flight.pop(command_id)
            self.unapplied += self.journal.settle_unapplied(unapplied)
        if worker not in self.finished:  # a farewell said again costs only its answer
            self.finished.add(worker)
            self.loop.batcher.forget(worker)
            _log.info("worker finished", worker=worker, last_applied=last, unapplied=len(unapplied))
        farewell = WorkerHello(worker_id=worker, last_applied_sequence=last, finished=True)
        self.node.publish(Channel.CMD, farewell, scope=worker)

    def _refused_signal(self, item: PendingSignal, error: ContractError) -> None:
        """A fast signal whose feature block broke the contract: counted, logged, not decided."""
        self.refused_signals += 1
        if self.refused_signals & (self.refused_signals - 1) == 0:  # 1, 2, 4, ...: bounded log
            _log.warning(
                "fast signal refused",
                worker=item.worker_id,
                slot=item.slot_id,
                reason=error.reason.name.lower(),
                path=error.path,
                detail=error.detail,
                refused=self.refused_signals,
            )

    def _ignore(self, what: str, sender: str, claimed: str) -> None:
        """An ack or hello that speaks for another worker than its sender settles nothing."""
        self.misattributed += 1
        if self.misattributed & (self.misattributed - 1) == 0:  # 1, 2, 4, 8, ...: bounded log
            _log.warning(
                f"{what} for another worker ignored",
                sender=sender,
                claimed=claimed,
                ignored=self.misattributed,
            )

    def _on_hello(self, hello: WorkerHello) -> None:
        """Settle what the worker already applied; resend the rest now, in order.

        The rest includes what the journal saw acknowledged past the hello's sequence: state
        queries the worker answered but did not checkpoint before a crash.
        """
        worker = hello.worker_id
        last = hello.last_applied_sequence
        self._settle_applied(worker, last)
        if hello.finished:
            self._farewell(worker, last)
            return
        self.finished.discard(worker)  # the same id, running again
        if last == 0:
            self.loop.forget(worker)  # a fresh worker counts its epochs from the start again
        pending = self.in_flight.of_worker(worker)
        now = time.monotonic()
        for flight in pending:
            flight.resend_at = now + self.ack_timeout_s
        resend = [*self.journal.settled(worker, last), *(f.entry for f in pending)]
        for entry in sorted(resend, key=lambda e: e.sequence):
            self._send(entry)
        _log.info("worker hello", worker=worker, last_applied=last, resent=len(resend))
