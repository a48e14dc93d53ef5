"""One simulated worker: the real `Worker` protocol on the real bus, with a simulated trainer.

Everything on the wire is what `leyline worker` sends, built by the same code: the hello, one
fast signal per slot each epoch, seed telemetry and state reports on `rep`, telemetry events,
and exactly one ledger turn per command (apply, or answer again from the ledger, or wait for
a missing predecessor). What is left out is what costs without changing the protocol: the
torch passes (`SimulatedTrainer`) and the checkpoint file (a simulated worker that dies
starts afresh, so its hello says 0 and the controller resends everything).

It also measures, for the scaling benchmark: each first delivery of a command against the
send time of the latest signal of the slot it targets (signal-to-command latency), and how
often each command was applied (must be once).
"""

from __future__ import annotations

import os
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bus import Envelope, Rejection, missing
from leyline import AdaptationCommand
from services.node import Node
from services.simworker.trainer import SimulatedTrainer
from services.worker.agent import worker_links
from services.worker.config import LifecycleConfig, TrainingConfig
from services.worker.ledger import Pending
from services.worker.model import WorkerModel
from services.worker.outcome import CommandOutcome
from services.worker.process import Checkpoint, Worker

#: Host widths of a simulated worker: seeds are still built and probed, at a tiny cost.
SIM_CHANNELS = (4, 4, 4)


class NoCheckpoint(Checkpoint):
    """Holds nothing: a simulated worker starts from epoch 0 with an empty ledger."""

    def __init__(self) -> None:
        super().__init__(Path(os.devnull))

    def load(self) -> dict[str, Any] | None:
        return None


class SimulatedWorker(Worker):
    """A `Worker` driven from outside, one `epoch()` at a time, among many in one process."""

    def __init__(self, node: Node, worker_id: str, seed: int, epochs: int) -> None:
        model = WorkerModel(
            worker_id, TrainingConfig(seed=seed, channels=SIM_CHANNELS), LifecycleConfig()
        )
        super().__init__(node, SimulatedTrainer(model, seed), NoCheckpoint(), epochs=epochs)
        self.node: Node = node
        self._slot_ids = list(model.slots)
        #: When each slot's latest fast signal was sent (wall clock: the controller's header
        #: stamps its commands with the same clock on the same host).
        self._signal_sent: dict[str, int] = {}
        self.latencies_us: list[float] = []
        #: The controller's part of each: signal sent to command sent (its header's clock).
        self.controller_us: list[float] = []
        self.applied: Counter[str] = Counter()
        self.deliveries = 0
        self.signals = 0
        self._timed: set[str] = set()
        self.rejections: Counter[str] = Counter()
        node.subscriber.on_rejection(self._count_rejection)

    @property
    def done(self) -> bool:
        return self.trainer.epoch >= self.epochs

    def heard(self) -> bool:
        """The controller and the sink hear our signals and telemetry, and we hear commands:
        the condition `Agent.connect` waits for, asked without waiting."""
        return not missing(*worker_links(self.node, self.worker_id))

    def run_epoch(self) -> None:
        """One simulated epoch: its signals, telemetry and reports on the bus."""
        report = self.trainer.tick()
        sent = time.time_ns()
        self.signals += len(report.fast)
        for signal in report.fast:
            self._signal_sent[self._slot_ids[signal.slot_index]] = sent
        self.publish(report)

    def apply_due(self) -> None:
        """Apply the commands delivered so far: a worker that does not train is always at a
        safe point."""
        if self.due:
            self.safe_point(0.0)

    def save(self) -> None:
        """Nothing is kept (`NoCheckpoint`), so not even the state is gathered: the 64 workers
        of a process would spend milliseconds each on it per epoch and per command."""

    def _on_command(self, envelope: Envelope[Any]) -> None:
        command = envelope.message
        if not isinstance(command, AdaptationCommand):  # a farewell's answer
            super()._on_command(envelope)
            return
        self.deliveries += 1
        fresh = command.command_id not in self._timed and command.command_id not in self.ledger.acks
        sent = self._signal_sent.get(command.target_slot_id or "")
        if fresh and sent is not None and command.sequence > self.ledger.last_applied:
            self._timed.add(command.command_id)
            self.latencies_us.append((time.time_ns() - sent) / 1e3)
            self.controller_us.append((envelope.header.sent_ns - sent) / 1e3)
        super()._on_command(envelope)

    def _apply(self, command: Pending) -> CommandOutcome:
        self.applied[command.command_id] += 1
        return super()._apply(command)

    def _count_rejection(self, rejection: Rejection) -> None:
        self.rejections[rejection.reason.name.lower()] += 1

    def summary(self) -> dict[str, Any]:
        """What this worker saw, for the run's results file."""
        return {
            "worker": self.worker_id,
            "epochs": self.trainer.epoch,
            "commands": len(self.applied),
            "applied_more_than_once": sum(1 for n in self.applied.values() if n > 1),
            "deliveries": self.deliveries,
            "last_applied": self.ledger.last_applied,
            "farewell_answered": self.farewell_answered,
            # Delivered, not applied when the run ended (none: every delivery is applied at
            # once); and waiting for a predecessor that never came.
            "due_at_close": len(self.due),
            "waiting_at_close": len(self.ledger.waiting),
            "latencies_us": self.latencies_us,
            "controller_us": self.controller_us,
            "signals": self.signals,
            "rejections": dict(self.rejections),
            # Handshakes our publisher's connections had refused (the subscriber's are in
            # `rejections`): a server that did not answer in time, or refused our key.
            "publisher_refused": {
                reason.name.lower(): count
                for reason, count in self.node.publisher.metrics.refused.items()
                if count
            },
        }
