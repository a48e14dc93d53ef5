"""The controller process: fast signals in, policy decisions out as journaled commands.

Every command is committed to the journal before it is sent, numbered per worker. Unacked
commands are resent with exponential backoff; a worker's hello (on start or after a restart)
names the last sequence it applied and gets everything after it again, in order. Workers
deduplicate by command id and sequence, so a resend is acknowledged, never re-applied.
"""

from __future__ import annotations

import heapq
import itertools
import time
from collections import Counter

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
    WorkerHello,
)
from leyline.telemetry import CommandIssued
from services.controller.inference import Decision, InferenceLoop
from services.controller.journal import CommandJournal, JournalEntry
from services.node import Node

_log = structlog.get_logger("leyline.controller")
MAX_BACKOFF_S = 30.0


class InFlight:
    """A journaled command not yet acknowledged, and when to send it again."""

    __slots__ = ("attempts", "entry", "resend_at")

    def __init__(self, entry: JournalEntry, resend_at: float) -> None:
        self.entry = entry
        self.attempts = 1
        self.resend_at = resend_at


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
        #: Unacked commands by id; indexed by worker and by (worker, slot) below, and queued by
        #: resend time, so no per-signal, per-hello or per-tick step scans all of them.
        self.in_flight: dict[str, InFlight] = {}
        self._by_worker: dict[str, dict[str, InFlight]] = {}
        self._busy_slots: Counter[tuple[str, str]] = Counter()
        self._resends: list[tuple[float, int, str]] = []
        self._pushed = itertools.count()
        now = time.monotonic()
        # A restarted controller picks up what it had sent and not seen acknowledged.
        for entry in journal.unacked():
            self._track(InFlight(entry, now + ack_timeout_s))
        #: Decisions the policy made (a WAIT included), and commands issued from them.
        self.decided = 0
        self.issued = 0
        self.applied = 0
        self.rejected = 0
        self.resent = 0
        #: Acks and hellos ignored because they speak for another worker than their sender.
        self.misattributed = 0
        node.subscriber.on(Channel.SIG, self._on_signal)
        node.subscriber.on(Channel.ACK, self._on_ack)

    def tick(self) -> None:
        """Decide the batches that are ready, publish their commands, resend overdue ones."""
        decisions = self.loop.step()
        self.decided += len(decisions)
        issuable = [
            (d, command)
            for d in decisions
            if (command := d.command) is not None and not self._busy(d.worker_id, d.slot_id)
        ]
        # One journal transaction for everything decided, committed before anything is sent.
        entries = self.journal.issue_many([(d.worker_id, d.slot_id, c) for d, c in issuable])
        for (decision, _), entry in zip(issuable, entries, strict=True):
            self._act(decision, entry)
        now = time.monotonic()
        resends = self._resends
        while resends and resends[0][0] <= now:
            due, _, command_id = heapq.heappop(resends)
            flight = self.in_flight.get(command_id)
            if flight is None or flight.resend_at != due:
                continue  # settled, or its resend was moved (a hello): a stale heap entry
            self._send(flight.entry)
            flight.attempts += 1
            backoff = self.ack_timeout_s * 2 ** (flight.attempts - 1)
            self._schedule(flight, now + min(backoff, MAX_BACKOFF_S))
            self.resent += 1

    def run(self) -> None:
        while not self.node.stopping:
            deadline = self.loop.deadline()
            wait = 0.05 if deadline is None else max(0.0, deadline - time.monotonic())
            self.node.pump(max(1, int(wait * 1000)))
            self.tick()

    def _busy(self, worker_id: str, slot_id: str) -> bool:
        return (worker_id, slot_id) in self._busy_slots

    def _track(self, flight: InFlight) -> None:
        entry = flight.entry
        command_id = entry.command.command_id
        self.in_flight[command_id] = flight
        self._by_worker.setdefault(entry.worker_id, {})[command_id] = flight
        self._busy_slots[entry.worker_id, entry.slot_id] += 1
        self._schedule(flight, flight.resend_at)

    def _schedule(self, flight: InFlight, resend_at: float) -> None:
        flight.resend_at = resend_at
        entry = (resend_at, next(self._pushed), flight.entry.command.command_id)
        heapq.heappush(self._resends, entry)

    def _untrack(self, command_id: str) -> None:
        entry = self.in_flight.pop(command_id).entry
        flights = self._by_worker[entry.worker_id]
        del flights[command_id]
        if not flights:
            del self._by_worker[entry.worker_id]
        key = (entry.worker_id, entry.slot_id)
        self._busy_slots[key] -= 1
        if not self._busy_slots[key]:
            del self._busy_slots[key]

    def _on_signal(self, envelope: Envelope) -> None:
        signal: FastTrainingSignals = envelope.message
        if signal.slot_index >= len(self.slots):
            _log.warning("signal for an unknown slot", slot_index=signal.slot_index)
            return
        worker_id = envelope.header.sender
        slot_id = self.slots[signal.slot_index]
        if not self._busy(worker_id, slot_id):
            self.loop.submit(worker_id, slot_id, signal)

    def _act(self, decision: Decision, entry: JournalEntry) -> None:
        self._track(InFlight(entry, time.monotonic() + self.ack_timeout_s))
        self._send(entry)
        self.issued += 1
        command = entry.command
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
                message=f"{decision.action.name} #{command.sequence} ({command.reason})",
            )
        )
        _log.info(
            "command issued",
            worker=decision.worker_id,
            slot=decision.slot_id,
            sequence=command.sequence,
            action=decision.action.name,
            reason=command.reason,
        )

    def _send(self, entry: JournalEntry) -> None:
        self.node.publish(Channel.CMD, entry.command, scope=entry.worker_id)

    def _on_ack(self, envelope: Envelope) -> None:
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
        self._untrack(ack.command_id)
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
        if last == 0:
            self.loop.forget(worker)  # a fresh worker counts its epochs from the start again
        for flight in list(self._by_worker.get(worker, {}).values()):
            command: AdaptationCommand = flight.entry.command
            if command.sequence <= last:
                # Applied, its ack lost: the worker's checkpoint says so.
                self.journal.acknowledge(command.command_id, AckOutcome.DUPLICATE)
                self._untrack(command.command_id)
        pending = list(self._by_worker.get(worker, {}).values())
        now = time.monotonic()
        for flight in pending:
            self._schedule(flight, now + self.ack_timeout_s)
        resend = [*self.journal.settled(worker, last), *(f.entry for f in pending)]
        for entry in sorted(resend, key=lambda e: e.command.sequence):
            self._send(entry)
        _log.info("worker hello", worker=worker, last_applied=last, resent=len(resend))
