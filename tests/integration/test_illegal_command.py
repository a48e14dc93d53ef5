"""A real worker refuses illegal commands by name, acknowledges them as rejected, and lives on.

One sink and one worker run as processes for the module; the test process takes the
controller's seat: a bus Publisher bound where the worker takes its commands, and a
Subscriber bound where the worker sends its acks, telemetry and reports. Slot `block2_post`
stays empty throughout; `block3_post` is grown by the test that needs a seed.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import pytest
from service_processes import ServiceProcesses, query, wait_until

from bus import Channel, Envelope, Publisher, Subscriber, topic
from bus.security import Curve, Role, ensure_keys
from leyline import (
    AckOutcome,
    AdaptationCommand,
    CommandAck,
    CommandType,
    SeedStage,
    SeedStateReport,
    TelemetryEventType,
    new_id,
)
from leyline.actions import SLOT_IDS
from leyline.telemetry import CommandFailed, ContractViolation, SeedStageChanged
from services.stack import free_ports

pytestmark = pytest.mark.slow

WORKER = "w1"
EMPTY, GROWN = SLOT_IDS["cnn"]
#: Long enough that the worker is still training when the last test ends (it is stopped).
EPOCHS = 1000
#: Stage dwells scale with this: 100 keeps a new seed in TRAINING for 10 epochs.
MAX_EPOCHS_PRESET = 100
CONNECT_TIMEOUT_S = 120.0
#: A command is applied between epochs, so an answer can take one epoch and then some.
ANSWER_TIMEOUT_S = 60.0
#: The sink commits every 0.2 s; this only bounds a hang.
SINK_TIMEOUT_S = 30.0
ILLEGAL = "illegal_transition"


class WorkerProbe:
    """The controller's seat at one real worker: commands out; its acks, events, reports in."""

    def __init__(self, worker_id: str, commands: str, intake: str, keys: Path) -> None:
        self.worker_id = worker_id
        security = Curve.from_directory(keys, "controller")
        self.publisher = Publisher(commands, "controller", security=security)
        channels = (Channel.SIG, Channel.TEL, Channel.ACK, Channel.REP)
        self.subscriber = Subscriber(
            intake, [(c, worker_id) for c in channels], bind=True, security=security
        )
        self.received: list[Envelope] = []
        for channel in (Channel.TEL, Channel.ACK, Channel.REP):
            self.subscriber.on(channel, self.received.append)
        self._sequence = 0

    def pump(self) -> None:
        self.subscriber.poll(0.02)
        self.publisher.service()

    def connect(self, timeout_s: float, context: ServiceProcesses) -> None:
        """Until the worker subscribes to our commands and we hear it on every channel."""
        commands = topic(Channel.CMD, self.worker_id)

        def ready() -> bool | None:
            heard = self.subscriber.wait_ready(0.0, publishers=[self.worker_id])
            return (heard and self.publisher.wait_for_subscribers(commands, 1, 0.0)) or None

        what = f"{self.worker_id} to connect"
        wait_until(ready, timeout_s, what, pause=self.pump, context=context.log_tails)

    def send(self, command: AdaptationCommand) -> CommandAck:
        """Publish `command` with the next journal sequence; the worker's ack of it."""
        self._sequence += 1
        numbered = msgspec.structs.replace(command, sequence=self._sequence)
        self.publisher.publish(Channel.CMD, numbered, self.worker_id)
        index = self.answer(numbered.command_id)
        ack: CommandAck = self.received[index].message
        return ack

    def send_raw(self, frames: list[bytes]) -> None:
        """Frames no Publisher would write, sent as a hostile peer would on the same socket."""
        with self.publisher._lock:  # its own thread shares the socket
            for link in self.publisher._socket.links:
                link.socket.send_multipart(frames)

    def answer(self, command_id: str) -> int:
        """Where in `received` the ack of `command_id` is, once it has arrived."""

        def ack_index() -> int | None:
            for index, envelope in enumerate(self.received):
                message = envelope.message
                if isinstance(message, CommandAck) and message.command_id == command_id:
                    return index
            return None

        return wait_until(ack_index, ANSWER_TIMEOUT_S, f"the ack of {command_id}", pause=self.pump)

    def state(self) -> dict[str, tuple[SeedStage, str]]:
        """Every slot's (stage, seed id), from the reports a REQUEST_STATE is answered with."""
        start = len(self.received)
        command = AdaptationCommand(command_id=new_id(), command_type=CommandType.REQUEST_STATE)
        assert self.send(command).outcome is AckOutcome.APPLIED
        answered = self.received[start : self.answer(command.command_id)]
        reports = [e.message for e in answered if isinstance(e.message, SeedStateReport)]
        return {report.slot_id: (report.stage, report.seed_id) for report in reports}

    def events(self, kind: TelemetryEventType) -> list[msgspec.Struct]:
        """The payloads of every event of `kind` the worker has sent so far."""
        return [
            e.message.payload
            for e in self.received
            if e.channel is Channel.TEL and e.message.event_type is kind
        ]

    def close(self) -> None:
        self.publisher.close()
        self.subscriber.close()


@dataclass(frozen=True)
class Rig:
    """The probe, the processes it talks to, and the sink's database."""

    probe: WorkerProbe
    services: ServiceProcesses
    sink_db: Path

    def log_tails(self) -> str:
        return self.services.log_tails()

    def stored_ack(self, command_id: str) -> tuple[Any, ...] | None:
        """The sink's row of the worker's ack of `command_id`, once stored."""
        if not self.sink_db.is_file():
            return None  # the sink has not created its database yet
        rows = query(
            self.sink_db, "SELECT outcome, reason FROM acks WHERE command_id = ?", [command_id]
        )
        return rows[0] if rows else None


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    data = tmp_path_factory.mktemp("illegal-command")
    commands, intake, sink_intake = (f"tcp://127.0.0.1:{port}" for port in free_ports(3))
    keys = data / "keys"
    ensure_keys(keys, {"controller": Role.CONTROLLER, "sink": Role.SINK, WORKER: Role.WORKER})
    probe = WorkerProbe(WORKER, commands, intake, keys)
    services = ServiceProcesses(data / "logs")
    try:
        services.start_service(
            "sink",
            "sink",
            {
                "LEYLINE_SINK_INTAKE": sink_intake,
                "LEYLINE_SINK_DB": str(data / "sink.db"),
                "LEYLINE_BUS_KEYS_DIR": str(keys),
            },
        )
        services.start_service(
            WORKER,
            "worker",
            {
                "LEYLINE_WORKER_ID": WORKER,
                "LEYLINE_WORKER_COMMANDS": f"controller@{commands}",
                "LEYLINE_WORKER_INTAKE": f'["controller@{intake}", "sink@{sink_intake}"]',
                "LEYLINE_BUS_KEYS_DIR": str(keys),
                "LEYLINE_WORKER_EPOCHS": str(EPOCHS),
                "LEYLINE_WORKER_MAX_EPOCHS_PRESET": str(MAX_EPOCHS_PRESET),
                "LEYLINE_WORKER_DATA_DIR": str(data),
                "LEYLINE_WORKER_SEED": "1",
            },
        )
        probe.connect(CONNECT_TIMEOUT_S, services)
        yield Rig(probe, services, data / "sink.db")
    finally:
        services.close()  # the worker first, then the sink
        probe.close()


def assert_rejected(rig: Rig, command: AdaptationCommand, reason: str, *mentions: str) -> None:
    """Sent, `command` is acked REJECTED for `reason`, reported failed, and both are on record."""
    ack = rig.probe.send(command)
    assert (ack.outcome, ack.reason, ack.command_type) == (
        AckOutcome.REJECTED,
        reason,
        command.command_type,
    )
    for mention in mentions:
        assert mention in ack.detail
    failures = [
        payload
        for payload in rig.probe.events(TelemetryEventType.COMMAND_FAILED)
        if isinstance(payload, CommandFailed) and payload.command_id == command.command_id
    ]
    assert [(f.reason, f.command_type) for f in failures] == [(reason, command.command_type.name)]
    stored = wait_until(
        lambda: rig.stored_ack(command.command_id), SINK_TIMEOUT_S, "the sink to store the ack"
    )
    assert stored == ("REJECTED", reason)


def violations(probe: WorkerProbe) -> list[ContractViolation]:
    """The worker's reports of messages it refused on its command topic."""
    events = probe.events(TelemetryEventType.CONTRACT_VIOLATION)
    commands = topic(Channel.CMD, WORKER).decode()
    return [v for v in events if isinstance(v, ContractViolation) and v.topic == commands]


def test_worker_answers_request_state_with_every_slot_and_no_violation(rig: Rig) -> None:
    refused = len(violations(rig.probe))
    assert set(rig.probe.state()) == set(SLOT_IDS["cnn"])
    # The refusal would have arrived before the ack: one connection keeps the worker's order.
    assert violations(rig.probe)[refused:] == []


def test_worker_rejects_advancing_an_empty_slot_to_fossilized(rig: Rig) -> None:
    before = rig.probe.state()
    assert before[EMPTY] == (SeedStage.DORMANT, "")
    advance = AdaptationCommand(
        command_id=new_id(),
        command_type=CommandType.ADVANCE_STAGE,
        target_slot_id=EMPTY,
        target_stage=SeedStage.FOSSILIZED,
    )
    assert_rejected(rig, advance, ILLEGAL, "DORMANT -> FOSSILIZED")
    assert rig.probe.state()[EMPTY] == before[EMPTY]


def test_worker_rejects_culling_an_empty_slot(rig: Rig) -> None:
    before = rig.probe.state()
    cull = AdaptationCommand(
        command_id=new_id(), command_type=CommandType.CULL, target_slot_id=EMPTY
    )
    assert_rejected(rig, cull, ILLEGAL, "DORMANT -> CULLED")
    assert rig.probe.state()[EMPTY] == before[EMPTY] == (SeedStage.DORMANT, "")


def test_worker_rejects_a_command_for_a_slot_it_does_not_have(rig: Rig) -> None:
    alpha = AdaptationCommand(
        command_id=new_id(),
        command_type=CommandType.SET_ALPHA,
        target_slot_id="no_such_slot",
        alpha_value=0.5,
    )
    assert_rejected(rig, alpha, "unknown_target", "no_such_slot")


def test_worker_applies_germinate_then_rejects_fossilize_from_training(rig: Rig) -> None:
    probe = rig.probe
    germinate = AdaptationCommand(
        command_id=new_id(),
        command_type=CommandType.GERMINATE,
        target_slot_id=GROWN,
        blueprint_id="norm",
    )
    ack = probe.send(germinate)
    assert (ack.outcome, ack.stage_after) == (AckOutcome.APPLIED, SeedStage.GERMINATED)
    stored = wait_until(
        lambda: rig.stored_ack(germinate.command_id), SINK_TIMEOUT_S, "the sink to store the ack"
    )
    assert stored == ("APPLIED", "")

    def training() -> bool | None:
        moves = probe.events(TelemetryEventType.SEED_STAGE_CHANGED)
        started = [m for m in moves if isinstance(m, SeedStageChanged)]
        return any(m.to_stage is SeedStage.TRAINING for m in started) or None

    wait_until(training, ANSWER_TIMEOUT_S, "the seed to start TRAINING", pause=probe.pump)
    before = probe.state()
    stage, seed = before[GROWN]
    assert stage is SeedStage.TRAINING and seed
    fossilize = AdaptationCommand(
        command_id=new_id(),
        command_type=CommandType.ADVANCE_STAGE,
        target_slot_id=GROWN,
        target_stage=SeedStage.FOSSILIZED,
    )
    assert_rejected(rig, fossilize, ILLEGAL, "TRAINING -> FOSSILIZED")
    assert probe.state() == before


def test_worker_reports_garbage_frames_and_keeps_running(rig: Rig) -> None:
    probe = rig.probe
    commands = topic(Channel.CMD, WORKER)
    probe.send_raw([commands + b"\x00\x02\xc1 not a header"])  # wire v2, flags 0xc1
    probe.send_raw([commands, b"two frames only"])

    def reported() -> set[str] | None:
        reasons = {v.reason for v in violations(probe)}
        return reasons if {"bad_header", "frame_count"} <= reasons else None

    wait_until(reported, ANSWER_TIMEOUT_S, "the worker to report both frames", pause=probe.pump)
    assert rig.services.processes[WORKER].poll() is None
    assert set(probe.state()) == set(SLOT_IDS["cnn"])  # and it still answers commands


def test_worker_acks_a_command_refused_at_decode_as_rejected(rig: Rig) -> None:
    probe = rig.probe
    alpha = AdaptationCommand(
        command_id=new_id(),
        command_type=CommandType.SET_ALPHA,
        target_slot_id=EMPTY,
        alpha_value=5.0,
    )
    ack = probe.send(alpha)  # the contract bounds alpha to [0, 1]: refused while decoding

    assert (ack.outcome, ack.reason) == (AckOutcome.REJECTED, "invalid_value")
    assert "alpha_value" in ack.detail
    stored = wait_until(
        lambda: rig.stored_ack(alpha.command_id), SINK_TIMEOUT_S, "the sink to store the ack"
    )
    assert stored == ("REJECTED", "invalid_value")
    assert set(probe.state()) == set(SLOT_IDS["cnn"])  # the next command is not held behind it


def test_worker_answers_a_resend_again_without_a_violation(rig: Rig) -> None:
    probe = rig.probe
    refused = len(violations(probe))
    cull = AdaptationCommand(
        command_id=new_id(), command_type=CommandType.CULL, target_slot_id=EMPTY
    )
    first = probe.send(cull)
    resent = msgspec.structs.replace(cull, sequence=first.sequence)
    probe.publisher.publish(Channel.CMD, resent, WORKER)  # a new header sequence, same command

    def answered_twice() -> list[CommandAck] | None:
        acks = [
            e.message
            for e in probe.received
            if isinstance(e.message, CommandAck) and e.message.command_id == cull.command_id
        ]
        return acks if len(acks) == 2 else None

    assert wait_until(answered_twice, ANSWER_TIMEOUT_S, "the second ack", pause=probe.pump) == [
        first,
        first,
    ]
    assert first.outcome is AckOutcome.REJECTED
    assert set(probe.state()) == set(SLOT_IDS["cnn"])
    assert violations(probe)[refused:] == []
