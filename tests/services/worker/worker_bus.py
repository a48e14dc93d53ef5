"""A real Worker on real tcp sockets, with the test in the controller's seat.

The test owns a bus Publisher the worker takes its commands from and a Subscriber bound
where the worker sends its acks, telemetry and reports; the worker is built exactly as
`leyline worker` builds it (`build_worker`) and pumped by the test between sends, each pump
being one of the worker's safe points (`Worker.safe_point`).
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import msgspec

from bus import Channel, Envelope, Publisher, Subscriber, topic
from bus.header import WIRE_VERSION, Header, encode_frame
from leyline import AdaptationCommand, CommandAck, TelemetryEvent, TelemetryEventType
from leyline.telemetry import ContractViolation
from leyline.wire import encode
from services.cli.worker import build_worker
from services.config import BusConfig, WorkerConfig
from services.node import Node
from services.stack import free_ports
from services.worker.process import Worker

WORKER = "w1"
CONTROLLER = "controller"
#: Bounds a hang only; a command is answered within one pump of the worker.
TIMEOUT_S = 15.0
T = TypeVar("T")


class WorkerBus:
    """One real worker, and the controller's seat at it: commands out, everything else in."""

    def __init__(self, data_dir: Path) -> None:
        commands, intake = (f"tcp://127.0.0.1:{port}" for port in free_ports(2))
        self.controller = Publisher(commands, CONTROLLER)
        channels = (Channel.SIG, Channel.TEL, Channel.ACK, Channel.REP)
        self.intake = Subscriber(intake, [(c, WORKER) for c in channels], bind=True)
        self.received: list[Envelope] = []
        for channel in channels:
            self.intake.on(channel, self.received.append)
        self._data_dir = data_dir
        self._addresses = (commands, intake)
        #: The last header sequence sent on the command topic (the test numbers its frames).
        self.header_sequence = 0
        self.node, self.worker = self._start()
        self.checkpoint = self.worker.checkpoint

    def _start(self) -> tuple[Node, Worker]:
        commands, intake = self._addresses
        config = WorkerConfig(
            id=WORKER, commands=commands, intake=(intake,), data_dir=str(self._data_dir)
        )
        handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            worker = build_worker(config, BusConfig(insecure=True))
        finally:  # the worker's node takes over SIGINT and SIGTERM; the test run keeps them
            for sig, handler in handlers.items():
                signal.signal(sig, handler)
        self._connect(worker)
        return worker.node, worker

    def restart(self) -> None:
        """The worker process dies (no goodbye) and a new one resumes from its checkpoint."""
        self.node.close()
        self.node, self.worker = self._start()

    def _connect(self, worker: Worker) -> None:
        commands = topic(Channel.CMD, WORKER)

        def ready() -> bool | None:
            heard = self.intake.wait_ready(0.0, publishers=[WORKER])
            subscribed = self.controller.wait_for_subscribers(commands, 1, 0.0)
            return (heard and subscribed and worker.node.subscriber.wait_ready(0.0)) or None

        self.wait(ready, "the worker to connect", worker)

    def pump(self, worker: Worker | None = None) -> None:
        """One turn for everyone; the worker's is a safe point, where it applies commands."""
        (worker or self.worker).safe_point(0.005)
        self.controller.service()
        self.intake.poll(5)

    def wait(self, found: Callable[[], T | None], what: str, worker: Worker | None = None) -> T:
        deadline = time.monotonic() + TIMEOUT_S
        while time.monotonic() < deadline:
            self.pump(worker)
            value = found()
            if value is not None:
                return value
        raise AssertionError(f"timed out waiting for {what}")

    def settle(self, seconds: float = 0.3) -> None:
        """Pump a while: long enough for anything already sent to have been handled."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.pump()

    # -- sending -------------------------------------------------------------------------

    def publish(self, command: AdaptationCommand, sequence: int) -> AdaptationCommand:
        """Publish `command` as journal entry `sequence` the way the controller does."""
        numbered = msgspec.structs.replace(command, sequence=sequence)
        self.send_frames(encode(numbered))
        return numbered

    def send(self, command: AdaptationCommand, sequence: int) -> CommandAck:
        """Publish, then wait for the worker's ack of it."""
        numbered = self.publish(command, sequence)
        return self.ack_of(numbered.command_id)

    def send_frames(
        self, payload: bytes, *, header_sequence: int | None = None, incarnation: int = 0
    ) -> None:
        """Send `payload` under the next header sequence, or under one no honest publisher
        would write (a reused or stale one) when `header_sequence` or `incarnation` is given."""
        if header_sequence is None:
            self.header_sequence += 1
            header_sequence = self.header_sequence
        header = Header(
            WIRE_VERSION,
            CONTROLLER,
            incarnation or self.controller.incarnation,
            header_sequence,
            time.time_ns(),
        )
        frame = encode_frame(topic(Channel.CMD, WORKER), header, payload)
        with self.controller._lock:  # its own thread shares the socket
            assert self.controller._socket.send_frame(frame)

    # -- what came back ------------------------------------------------------------------

    def acks(self, command_id: str) -> list[CommandAck]:
        return [
            e.message
            for e in self.received
            if isinstance(e.message, CommandAck) and e.message.command_id == command_id
        ]

    def ack_of(self, command_id: str) -> CommandAck:
        return self.wait(lambda: next(iter(self.acks(command_id)), None), f"ack of {command_id}")

    def events(self, kind: TelemetryEventType) -> list[msgspec.Struct]:
        return [
            e.message.payload
            for e in self.received
            if isinstance(e.message, TelemetryEvent) and e.message.event_type is kind
        ]

    def violations(self) -> list[ContractViolation]:
        """The refusals the worker reported on its command topic."""
        commands = topic(Channel.CMD, WORKER).decode()
        return [
            v
            for v in self.events(TelemetryEventType.CONTRACT_VIOLATION)
            if isinstance(v, ContractViolation) and v.topic == commands
        ]

    def violation(self, reason: str) -> ContractViolation:
        def found() -> ContractViolation | None:
            return next((v for v in self.violations() if v.reason == reason), None)

        return self.wait(found, f"a {reason} violation")

    def close(self) -> None:
        self.node.close()
        self.controller.close()
        self.intake.close()
