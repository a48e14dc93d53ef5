"""A simulated worker keeps the worker protocol: one ledger turn per command, real messages.

The test sits in the controller's seat on real tcp sockets (plaintext: the CURVE path is the
slow integration test's): it publishes commands to one simulated worker and reads what the
worker sends back.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from bus import Channel, Envelope, Publisher, Subscriber, topic
from leyline import (
    AckOutcome,
    AdaptationCommand,
    CommandAck,
    CommandType,
    FastTrainingSignals,
    SeedStage,
    SeedStateReport,
    TelemetryEvent,
    TelemetryEventType,
    WorkerHello,
)
from services.cli._service import make_node
from services.config import BusConfig
from services.simworker import SimulatedWorker
from services.stack import free_ports

WORKER = "sim1"
TIMEOUT_S = 15.0
T = TypeVar("T")


class ControllerSeat:
    """A publisher of commands and a subscriber of everything one simulated worker sends."""

    def __init__(self, state_dir: Path) -> None:
        commands, intake = (f"tcp://127.0.0.1:{port}" for port in free_ports(2))
        self.publisher = Publisher(commands, "controller")
        channels = (Channel.SIG, Channel.TEL, Channel.ACK, Channel.REP)
        self.intake = Subscriber(intake, [(c, WORKER) for c in channels], bind=True)
        self.received: list[Envelope] = []
        for channel in channels:
            self.intake.on(channel, self.received.append)
        handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            node = make_node(
                WORKER,
                BusConfig(insecure=True),
                subscribe=[(Channel.CMD, WORKER)],
                publish_connect=[intake],
                subscribe_connect=[commands],
                state_dir=state_dir,
            )
        finally:  # the node takes over SIGINT and SIGTERM; the test run keeps them
            for sig, handler in handlers.items():
                signal.signal(sig, handler)
        self.worker = SimulatedWorker(node, WORKER, seed=7, epochs=30)
        self.sequence = 0
        self.wait(self._connected, "the simulated worker to connect")
        self.worker.hello()

    def _connected(self) -> bool | None:
        heard = self.intake.wait_ready(0.0, publishers=[WORKER])
        subscribed = self.publisher.wait_for_subscribers(topic(Channel.CMD, WORKER), 1, 0.0)
        return (heard and subscribed and self.worker.heard()) or None

    def pump(self) -> None:
        self.worker.node.pump(0.005)
        self.worker.apply_due()
        self.publisher.service()
        self.intake.poll(5)

    def wait(self, found: Callable[[], T | None], what: str) -> T:
        deadline = time.monotonic() + TIMEOUT_S
        while time.monotonic() < deadline:
            self.pump()
            value = found()
            if value is not None:
                return value
        raise AssertionError(f"timed out waiting for {what}")

    def settle(self, seconds: float = 0.3) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.pump()

    def send(self, command: AdaptationCommand) -> None:
        self.publisher.publish(Channel.CMD, command, WORKER)

    def messages(self, kind: type[T]) -> list[T]:
        return [e.message for e in self.received if isinstance(e.message, kind)]

    def acks(self, command_id: str) -> list[CommandAck]:
        return [a for a in self.messages(CommandAck) if a.command_id == command_id]

    def close(self) -> None:
        self.worker.node.close()
        self.publisher.close()
        self.intake.close()


@pytest.fixture
def seat(tmp_path: Path) -> Iterator[ControllerSeat]:
    seat = ControllerSeat(tmp_path)
    try:
        yield seat
    finally:
        seat.close()


def germinate(command_id: str, sequence: int) -> AdaptationCommand:
    return AdaptationCommand(
        command_id=command_id,
        command_type=CommandType.GERMINATE,
        target_slot_id="block2_post",
        blueprint_id="norm",
        sequence=sequence,
    )


def test_simulated_worker_says_hello_with_its_last_applied_sequence(
    seat: ControllerSeat,
) -> None:
    hello = seat.wait(lambda: next(iter(seat.messages(WorkerHello)), None), "a hello")
    assert hello.worker_id == WORKER and hello.last_applied_sequence == 0


def test_simulated_worker_applies_a_command_once_and_answers_its_resend_from_the_ledger(
    seat: ControllerSeat,
) -> None:
    command = germinate("c-1", 1)
    seat.send(command)
    first = seat.wait(lambda: next(iter(seat.acks("c-1")), None), "the ack of c-1")
    assert first.outcome is AckOutcome.APPLIED and first.stage_after is SeedStage.GERMINATED
    report = seat.wait(lambda: next(iter(seat.messages(SeedStateReport)), None), "a report")
    assert report.slot_id == "block2_post" and report.stage is SeedStage.GERMINATED
    seat.send(command)  # a resend, as after a lost ack
    seat.wait(lambda: seat.acks("c-1")[1:] or None, "the second ack of c-1")
    seat.settle()
    assert [a.outcome for a in seat.acks("c-1")] == [AckOutcome.APPLIED, AckOutcome.APPLIED]
    assert seat.worker.applied == {"c-1": 1}
    assert seat.worker.ledger.last_applied == 1


def test_simulated_worker_holds_a_command_until_its_predecessor_arrives(
    seat: ControllerSeat,
) -> None:
    cull = AdaptationCommand(
        command_id="c-2", command_type=CommandType.CULL, target_slot_id="block2_post", sequence=2
    )
    seat.send(cull)
    seat.settle()
    assert seat.acks("c-2") == []  # sequence 1 is missing: nothing is applied out of order
    seat.send(germinate("c-1", 1))
    seat.wait(lambda: seat.acks("c-2") or None, "the ack of c-2")
    order = [a.command_id for a in seat.messages(CommandAck)]
    assert order.index("c-1") < order.index("c-2")
    assert seat.acks("c-2")[0].stage_after is SeedStage.CULLED
    assert seat.worker.applied == {"c-1": 1, "c-2": 1}


def test_simulated_worker_acks_a_new_id_at_an_applied_sequence_as_duplicate(
    seat: ControllerSeat,
) -> None:
    seat.send(germinate("c-1", 1))
    seat.wait(lambda: seat.acks("c-1") or None, "the ack of c-1")
    seat.send(germinate("c-other", 1))
    duplicate = seat.wait(lambda: next(iter(seat.acks("c-other")), None), "its ack")
    assert duplicate.outcome is AckOutcome.DUPLICATE
    assert "c-other" not in seat.worker.applied


def test_simulated_epochs_publish_a_signal_per_slot_and_an_improving_curve(
    seat: ControllerSeat,
) -> None:
    for _ in range(8):
        seat.worker.run_epoch()
    seat.wait(lambda: seat.messages(FastTrainingSignals)[15:] or None, "16 fast signals")
    signals = seat.messages(FastTrainingSignals)
    assert sorted({s.slot_index for s in signals}) == [0, 1]

    def epochs() -> list[Any] | None:
        found = [
            e.payload
            for e in seat.messages(TelemetryEvent)
            if e.event_type is TelemetryEventType.EPOCH_COMPLETED
        ]
        return found if len(found) == 8 else None

    accuracies = [e.val_accuracy for e in seat.wait(epochs, "eight completed epochs")]
    assert accuracies[-1] > accuracies[0] + 20
