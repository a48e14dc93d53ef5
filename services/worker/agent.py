"""Leyline inside a training loop: commands applied exactly once at a safe point, and the loop's
metrics published as the worker's signals, telemetry and reports.

The user keeps their model, their data and their loop, and calls three verbs:

    agent.step()                      # after each optimiser step
    agent.end_epoch(train_loss=..., val_loss=..., val_accuracy=...)
    agent.safe_point()                # optional: apply what is due now, between two steps

Commands carry the controller's per-worker journal sequence (1, 2, ...). The agent queues
them in sequence order as the bus delivers them (at any pump) and applies them only at a safe
point (`safe_point`, which `end_epoch` calls after publishing the epoch): once each, through
the lifecycle guard at its turn. A command it has seen is acknowledged again (never
re-applied, never judged again), one that arrives ahead of a missing predecessor waits, and a
hello naming the last applied sequence asks the controller for what is missing. Nothing the
bus refused is applied; a command refused at decode is answered REJECTED in its place in the
sequence. With a checkpoint, each applied command and each epoch is saved atomically before
it is acknowledged, so a restarted process resumes exactly where its acknowledgements say it
was; state queries change nothing and are not checkpointed on their own.

At the end of the run `finish` applies what is due and says farewell (a finished hello): the
controller settles what is still in flight as unapplied and answers, and only then does the
agent stop listening, so a command sent as the run ended is never left unacknowledged.

Under data parallelism only the speaking rank (rank 0) has a node; every rank calls the same
verbs, and `ranks` hands every rank the commands rank 0 decided, in order, at the same safe
point, and the metrics all ranks agree on, so every rank's seeds move identically.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import structlog

from bus import (
    Channel,
    Envelope,
    NotReadyError,
    Publisher,
    Rejection,
    Subscriber,
    ready,
    topic,
)
from bus.security import Curve
from leyline import AckOutcome, AckReason, CommandAck, CommandType, WorkerHello
from services.node import Node, Transport
from services.worker.checkpoint import Checkpoint, Stateful
from services.worker.epochs import EpochClock, EpochReport
from services.worker.ledger import CommandLedger, Pending, RefusedCommand, attribute
from services.worker.outcome import CommandOutcome
from services.worker.seeds import Seeds

_log = structlog.get_logger("leyline.worker")
#: Commands held while a predecessor is missing.
MAX_WAITING = 256
#: How long `finish` waits for the controller to answer its farewell (a partition may hold
#: it), and how often it says it again meanwhile.
FAREWELL_TIMEOUT_S = 60.0
FAREWELL_REPEAT_S = 1.0


class Ranks(Protocol):
    """How the ranks of one data-parallel job agree (see `services.worker.distributed`)."""

    @property
    def speaker(self) -> bool: ...

    def share(self, commands: list[Pending]) -> list[Pending]: ...

    def agree(self, metrics: dict[str, float]) -> dict[str, float]: ...


def worker_node(
    worker_id: str,
    *,
    commands: Sequence[str] = (),
    intake: Sequence[str] = (),
    bus: Transport | None = None,
    security: Curve | None = None,
    replay_store: Path | None = None,
) -> Node:
    """A worker's node: its commands from `commands` (the controller's command address), its
    signals, acks, reports and telemetry to `intake` (the controller's and the sink's).

    Addresses read `controller@tcp://host:port` under CURVE (`security`, from
    `Curve.from_directory(keys_dir, worker_id)`); with `bus=InProcessBus()` leave them empty
    and connect the endpoints with `InProcessBus.connect`.
    """
    return Node(
        worker_id,
        subscribe=[(Channel.CMD, worker_id)],
        publish_connect=intake,
        subscribe_connect=commands,
        bus=bus,
        security=security,
        replay_store=replay_store,
    )


class TrainingState:
    """What a user's run checkpoints by default: the seeds' lifecycles, the module's weights
    (seeds included), the optimiser, the epoch clock, and any `extra` state of the loop's.

    Restored in that order: seeds are rebuilt (and regain their optimiser groups) before the
    weights and the optimiser state that need them are loaded.
    """

    def __init__(
        self, seeds: Seeds, clock: EpochClock, extra: Mapping[str, Stateful] | None = None
    ) -> None:
        self.seeds = seeds
        self.clock = clock
        self.extra = dict(extra or {})

    def state_dict(self) -> dict[str, Any]:
        optimizer = self.seeds.optimizer
        return {
            "seeds": self.seeds.state_dict(),
            "module": self.seeds.module.state_dict(),
            "optimizer": None if optimizer is None else optimizer.state_dict(),
            "clock": self.clock.state_dict(),
            "extra": {name: part.state_dict() for name, part in self.extra.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.seeds.load_state_dict(state["seeds"])
        self.seeds.module.load_state_dict(state["module"])
        optimizer = self.seeds.optimizer
        if optimizer is not None and state["optimizer"] is not None:
            optimizer.load_state_dict(state["optimizer"])
        self.clock.load_state_dict(state["clock"])
        for name, part in self.extra.items():
            part.load_state_dict(state["extra"][name])


def worker_links(
    node: Node, worker_id: str
) -> tuple[dict[Publisher, list[bytes]], dict[Subscriber, int]]:
    """What a worker waits for before it trains, as `bus.ready` takes it: its signals and
    telemetry have a subscriber (the controller, the sink), and its commands a publisher."""
    wanted = [topic(c, worker_id) for c in (Channel.SIG, Channel.TEL)]
    return {node.publisher: wanted}, {node.subscriber: 1}


class Agent:
    """One worker's seeds, driven by the controller over `node`, inside the user's loop.

    `state` is what the checkpoint holds besides the command ledger (default: a
    `TrainingState` of the seeds, the clock and `extra`); `state_dict()` gives the same to a
    user who checkpoints themselves. `command_window_s` is how long `end_epoch` listens for
    the controller's answer to the epoch before training on; `farewell_timeout_s` how long
    `finish` waits for the controller to answer the farewell.
    """

    def __init__(
        self,
        node: Node | None,
        seeds: Seeds,
        *,
        clock: EpochClock | None = None,
        checkpoint: Checkpoint | None = None,
        state: Stateful | None = None,
        extra: Mapping[str, Stateful] | None = None,
        command_window_s: float = 0.1,
        ranks: Ranks | None = None,
        farewell_timeout_s: float = FAREWELL_TIMEOUT_S,
    ) -> None:
        if node is None and (ranks is None or ranks.speaker):
            raise ValueError("only a rank that does not speak on the bus runs without a node")
        self.node = node
        self.seeds = seeds
        self.worker_id = seeds.worker_id
        self.clock = clock or EpochClock(seeds)
        self.state = state or TrainingState(seeds, self.clock, extra)
        self.checkpoint = checkpoint
        self.ledger = CommandLedger()
        self.command_window_s = command_window_s
        self.farewell_timeout_s = farewell_timeout_s
        self.ranks = ranks
        #: Commands in sequence order, queued as delivered, applied at the next safe point.
        self.due: list[Pending] = []
        self._next_hello = 0.0
        #: Whether the controller was heard (ready, or a command came): only then is a
        #: farewell's answer waited for.
        self._controller_heard = False
        #: After `finish`: commands are no longer applied, and whether the farewell was answered.
        self.finished = False
        self.farewell_answered = False
        #: Commands that arrived after the farewell: not applied (the controller settles them).
        self.after_farewell = 0
        self._commands = topic(Channel.CMD, self.worker_id).decode()
        self.resumed = self._resume()
        if node is not None:
            node.subscriber.on(Channel.CMD, self._on_command)
            node.subscriber.on_rejection(self._on_rejection)

    @property
    def speaker(self) -> bool:
        """Whether this process speaks on the bus (every process but a data-parallel rank > 0)."""
        return self.node is not None

    @property
    def epoch(self) -> int:
        return self.clock.epoch

    @property
    def stopping(self) -> bool:
        """The node was told to stop (SIGINT, SIGTERM): the loop should end after this epoch."""
        return self.node is not None and self.node.stopping

    # -- joining the bus ---------------------------------------------------------------------

    def connect(self, timeout_s: float = 30.0) -> bool:
        """Wait until the controller and the sink hear us and we hear the controller."""
        node = self.node
        if node is None:
            return True
        heard = True
        try:
            ready(*worker_links(node, self.worker_id), timeout_s=timeout_s)
        except NotReadyError as exc:
            _log.warning("peers not ready, starting anyway", missing=exc.missing)
            heard = False
        self._controller_heard = heard
        self.hello()
        return heard

    def hello(self) -> None:
        """Name the last applied command so the controller resends anything after it."""
        if self.node is None:
            return
        hello = WorkerHello(
            worker_id=self.worker_id, last_applied_sequence=self.ledger.last_applied
        )
        self.node.publish(Channel.ACK, hello)

    def finish(self, timeout_s: float | None = None) -> bool:
        """End the run: apply what is due, checkpoint, then say farewell until the controller
        answers it, for at most `timeout_s` (`farewell_timeout_s`); whether it was answered.

        Commands that arrive after the farewell are not applied: the controller settles them
        as unapplied when it hears it. The farewell is said again every
        `FAREWELL_REPEAT_S` until answered, so one lost in a partition is not the last word;
        a controller never heard from (no readiness, no command) is not waited for. Call it
        once, after the last epoch, on every rank.
        """
        self.safe_point()
        self.save()
        self.finished = True
        node = self.node
        if node is None:  # a data-parallel rank that does not speak
            return True
        timeout_s = self.farewell_timeout_s if timeout_s is None else timeout_s
        deadline = time.monotonic() + timeout_s
        said = 0.0
        while not self.farewell_answered and not node.stopping:
            now = time.monotonic()
            if now >= said + FAREWELL_REPEAT_S:
                said = now
                self.say_farewell()
            if now >= deadline or not self._controller_heard:
                break
            wait_s = min(said + FAREWELL_REPEAT_S, deadline) - now
            node.pump(wait_s)
        if not self.farewell_answered and self._controller_heard:
            _log.warning("farewell not answered", timeout_s=timeout_s)
        return self.farewell_answered

    def say_farewell(self) -> None:
        """Publish the farewell (a finished hello naming the last applied sequence) once;
        from now on nothing is applied. `finish` says it until answered; a caller driving
        many agents' buses itself (the simulated workers) says it for each."""
        self.finished = True
        if self.node is not None:
            farewell = WorkerHello(
                worker_id=self.worker_id,
                last_applied_sequence=self.ledger.last_applied,
                finished=True,
            )
            self.node.publish(Channel.ACK, farewell)

    # -- the three verbs -------------------------------------------------------------------

    def begin_epoch(self) -> None:
        """Start the next epoch now (`step` and `end_epoch` do it when the loop does not)."""
        self.clock.begin()

    def step(self) -> None:
        """After an optimiser step: record the step's gradients and service the bus (commands
        that arrive are queued, not applied: they wait for the next safe point)."""
        self.clock.record_step()
        if self.node is not None:
            self.node.pump(0)

    def end_epoch(
        self,
        *,
        train_loss: float,
        val_loss: float,
        val_accuracy: float,
        train_accuracy: float = 0.0,
    ) -> EpochReport:
        """Close the epoch with the loop's metrics (accuracies in percent): advance the slots,
        publish, checkpoint, then listen `command_window_s` and apply what arrived."""
        metrics = {
            "train_loss": train_loss,
            "val_loss": val_loss,
            "val_accuracy": val_accuracy,
            "train_accuracy": train_accuracy,
        }
        if self.ranks is not None:
            metrics = self.ranks.agree(metrics)
        report = self.clock.end(**metrics)
        self.publish(report)
        self.save()
        self.safe_point(self.command_window_s)
        return report

    def safe_point(self, timeout_s: float = 0.0) -> list[CommandOutcome]:
        """Service the bus for up to `timeout_s`, then apply every command due, in order.

        Call it only between optimiser steps. Under data parallelism every rank calls it at
        the same step and applies the same commands.
        """
        self._listen(timeout_s)
        due, self.due = self.due, []
        if self.ranks is not None:
            due = self.ranks.share(due)
        return [self._apply(command) for command in due]

    def _listen(self, seconds: float) -> None:
        node = self.node
        if node is None:
            return
        deadline = time.monotonic() + seconds
        node.pump(0)
        while not node.stopping:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            node.pump(remaining)

    # -- publishing --------------------------------------------------------------------------

    def publish(self, report: EpochReport) -> None:
        """Publish an epoch: its events, seed telemetry, slot reports and fast signals."""
        node = self.node
        if node is None:
            return
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
        node = self.node
        if node is None:
            return
        for event in outcome.events:
            node.emit(event)
        if outcome.field_report is not None:
            node.publish(Channel.REP, outcome.field_report)
        for state in outcome.reports:
            node.publish(Channel.REP, state)
        node.publish(Channel.ACK, ack)

    def _answer(self, ack: CommandAck) -> None:
        if self.node is not None:
            self.node.publish(Channel.ACK, ack)

    # -- commands ----------------------------------------------------------------------------

    def _on_command(self, envelope: Envelope[Any]) -> None:
        message = envelope.message
        if isinstance(message, WorkerHello):  # the controller's answer to a farewell
            answers = message.last_applied_sequence == self.ledger.last_applied
            if self.finished and message.finished and answers:
                self.farewell_answered = True
            return
        self._controller_heard = True
        self._receive(message)

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
        """Queue `command` at its turn, or answer it from the ledger if it is not new."""
        ledger = self.ledger
        prior = ledger.acks.get(command.command_id)
        if prior is not None:
            self._answer(prior)
            return
        sequence = command.sequence
        if sequence < 1:
            self._refuse_unjournaled(command)
            return
        if sequence <= ledger.last_applied:
            self._ack_duplicate(command)
            return
        if self.finished:  # after the farewell: settled unapplied by the controller
            self.after_farewell += 1
            return
        queued = ledger.last_applied + len(self.due)
        if sequence <= queued:
            return  # a resend of a queued command: its ack follows at the safe point
        if sequence > queued + 1:
            if len(ledger.waiting) < MAX_WAITING:
                ledger.waiting[sequence] = command
            if time.monotonic() >= self._next_hello:  # at most one resend request a second
                self._next_hello = time.monotonic() + 1.0
                self.hello()
            return
        self.due.append(command)
        while True:
            following = ledger.waiting.pop(ledger.last_applied + len(self.due) + 1, None)
            if following is None:
                return
            self.due.append(following)

    def _apply(self, command: Pending) -> CommandOutcome:
        """Carry out (or answer the refusal of) the next command in journal order.

        Its ack follows the checkpoint that records it, except for a state query: it changes
        nothing, so it is not worth an fsync; after a crash it may be answered again.
        """
        started = time.perf_counter()
        if isinstance(command, RefusedCommand):
            outcome = command.outcome(self.worker_id, self.seeds.epoch)
        else:
            outcome = self.seeds.apply_command(command)
        ack = outcome.ack(command.sequence, (time.perf_counter() - started) * 1000)
        self.ledger.last_applied = command.sequence
        self.ledger.remember(ack)
        if command.command_type is not CommandType.REQUEST_STATE:
            self.save()
        self._publish_outcome(outcome, ack)
        if self.speaker:
            _log.info(
                "command applied" if outcome.applied else "command rejected",
                command=command.command_type.name,
                sequence=command.sequence,
                slot=outcome.slot_id,
                reason=outcome.reason,
            )
        return outcome

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
            epoch=self.seeds.epoch,
        )
        self._answer(ack)

    def _ack_duplicate(self, command: Pending) -> None:
        ack = CommandAck(
            command_id=command.command_id,
            worker_id=self.worker_id,
            outcome=AckOutcome.DUPLICATE,
            command_type=command.command_type,
            sequence=command.sequence,
            detail=f"sequence {command.sequence} <= last applied {self.ledger.last_applied}",
            epoch=self.seeds.epoch,
        )
        self._answer(ack)

    # -- checkpoints -------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """The ledger of commands and the training state: a user's own checkpoint holds this
        to resume with exactly-once intact."""
        return {"commands": self.ledger.state_dict(), "state": self.state.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.state.load_state_dict(state["state"])
        self.ledger.load_state_dict(state["commands"])
        self.due.clear()

    def save(self) -> None:
        """Write the checkpoint (only the speaking rank writes; every rank holds the same)."""
        if self.checkpoint is not None and self.speaker:
            self.checkpoint.save(self.state_dict())

    def _resume(self) -> bool:
        state = None if self.checkpoint is None else self.checkpoint.load()
        if state is None:
            return False
        self.load_state_dict(state)
        _log.info(
            "resumed from checkpoint", epoch=self.epoch, last_applied=self.ledger.last_applied
        )
        return True

    def close(self) -> None:
        if self.node is not None:
            self.node.close()
