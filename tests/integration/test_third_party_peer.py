"""docs/protocol.md is enough to implement a peer: `third_party_peer` drives real services.

The peer imports only pyzmq, msgspec and the standard library (the first test reads its
imports). As a controller it commands a real worker process; as a worker it is commanded by a
real controller process. Both speak plaintext: the stack runs without CURVE today.
"""

from __future__ import annotations

import ast
import enum
import re
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest
from service_processes import ServiceProcesses, query, wait_until
from third_party_peer import (
    APPLIED,
    CONTRACT_VIOLATION,
    CULL,
    DUPLICATE,
    GERMINATE,
    GERMINATED,
    REJECTED,
    SEED_GERMINATED,
    SET_ALPHA,
    ControllerPeer,
    Header,
    Keys,
    Message,
    WorkerPeer,
    adaptation_command,
    read_frame,
)

from leyline import (
    AckOutcome,
    CommandType,
    RejectReason,
    RiskLevel,
    SeedStage,
    Severity,
    TelemetryEventType,
)
from services.stack import free_ports

PEER_MODULE = Path(__file__).with_name("third_party_peer.py")
ROOT = Path(__file__).resolve().parents[2]
PROTOCOL = ROOT / "docs" / "protocol.md"
WORKER = "w1"
#: Long enough that the worker is still training when the last test ends (it is stopped).
EPOCHS = 1000
#: Stage dwells scale with this: 100 keeps a new seed from moving on during the tests.
MAX_EPOCHS_PRESET = 100
START_TIMEOUT_S = 120.0
#: A command is applied between epochs, so an answer can take one epoch and then some.
ANSWER_TIMEOUT_S = 60.0
ACK_TIMEOUT_S = 1.0


def test_the_peer_imports_nothing_of_the_project() -> None:
    tree = ast.parse(PEER_MODULE.read_text(encoding="utf-8"))
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "a relative import reaches into the project"
            imported.add((node.module or "").split(".")[0])
    outside = {name for name in imported if name not in sys.stdlib_module_names}
    assert outside == {"zmq", "msgspec"}


# -- the document's own facts --------------------------------------------------------------


def fenced_after(marker: str) -> str:
    """The fenced block that follows `<!-- marker -->` in docs/protocol.md."""
    text = PROTOCOL.read_text(encoding="utf-8")
    found = re.search(rf"<!-- {marker} -->\n```\w*\n(.*?)\n```", text, re.DOTALL)
    assert found is not None, f"docs/protocol.md has no block after <!-- {marker} -->"
    return found.group(1)


def documented_bytes() -> dict[str, bytes]:
    """Each example of section 16 by title: the hex lines before its breakdown."""
    examples: dict[str, bytes] = {}
    title = ""
    for line in fenced_after("examples:output").splitlines():
        if not line.startswith(" "):
            title = line.split(" (")[0]
            examples[title] = b""
        elif "=" not in line and title:
            examples[title] += bytes.fromhex(line)
        else:
            title = ""  # the breakdown has begun
    return examples


def test_the_documented_examples_are_what_leyline_writes() -> None:
    program = fenced_after("examples:program")
    ran = subprocess.run(
        [sys.executable, "-"],
        input=program,
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "PATH": ""},
        check=True,
    )
    assert ran.stdout.rstrip("\n") == fenced_after("examples:output")


def test_the_peer_writes_the_documented_bytes() -> None:
    examples = documented_bytes()
    header = Header(2, "controller", 1764684000000000000, 1, 1764684000123456789)
    assert header.encode() == examples["header"]
    frame = examples["topic"] + b"\x00" + examples["header"] + examples["payload WorkerHello.v1"]
    assert read_frame(frame) == (b"cmd.w1.", header, 1, examples["payload WorkerHello.v1"])
    command = adaptation_command(GERMINATE, 1, target_slot_id="block3_post", blueprint_id="norm")
    command["command_id"] = "0b5c3f4e-9d2a-4c61-8f7e-2a1b3c4d5e6f"
    command["timestamp"] = datetime(2026, 12, 2, 14, 0, 0, 123456, tzinfo=UTC)
    assert msgspec.msgpack.encode(command) == examples["payload AdaptationCommand.v2"]
    assert msgspec.msgpack.decode(examples["payload AdaptationCommand.v2"]) == command


def documented_enums(section: str) -> dict[str, dict[int, str]]:
    """The `| Name | 1 A, 2 B |` rows of one section of docs/protocol.md."""
    text = PROTOCOL.read_text(encoding="utf-8")
    body = text.split(f"## {section}", 1)[1].split("\n## ", 1)[0]
    tables: dict[str, dict[int, str]] = {}
    for name, values in re.findall(r"^\| (\w+) \| ((?:\d+ \w+, )*\d+ \w+) \|$", body, re.M):
        tables[name] = {int(v): n for v, n in (item.split(" ") for item in values.split(", "))}
    return tables


def test_the_documented_enum_values_are_the_contracts() -> None:
    enums: list[type[enum.IntEnum]] = [
        SeedStage, CommandType, AckOutcome, RiskLevel, TelemetryEventType, Severity,
    ]  # fmt: skip
    expected = {e.__name__: {m.value: m.name for m in e} for e in enums}
    assert documented_enums("11. Enum values") == expected


def test_the_documented_rejection_reasons_are_the_contracts() -> None:
    text = PROTOCOL.read_text(encoding="utf-8").split("## 14. Rejections", 1)[1]
    rows = re.findall(r"^\| (\d+) \| `(\w+)` \|", text.split("\n## ", 1)[0], re.M)
    assert {int(v): n for v, n in rows} == {r.value: r.name.lower() for r in RejectReason}


# -- the peer as a controller, commanding a real worker ------------------------------------


class WorkerRig:
    """A real worker process and the peer in the controller's seat."""

    def __init__(self, peer: ControllerPeer, services: ServiceProcesses) -> None:
        self.peer = peer
        self.services = services
        self.hello: Message | None = None

    def log_tails(self) -> str:
        return self.services.log_tails()

    def answer(self, command: dict[str, Any], after: int = 0) -> dict[str, Any]:
        """The worker's next ack of `command` past inbox position `after`."""
        wanted = command["command_id"]

        def found() -> dict[str, Any] | None:
            for message in self.peer.inbox.messages[after:]:
                if message.tag == "CommandAck.v2" and message.payload["command_id"] == wanted:
                    return dict(message.payload)
            return None

        what = f"the ack of {wanted}"
        return wait_until(found, ANSWER_TIMEOUT_S, what, pause=self.peer.pump)

    def send_and_answer(self, command: dict[str, Any]) -> dict[str, Any]:
        mark = len(self.peer.inbox.messages)
        self.peer.send(command)
        return self.answer(command, after=mark)


def make_keys(data: Path, identities: dict[str, str]) -> Path:
    """A key directory for the run, made with the `leyline keys` command as a user would."""
    key_dir = data / "keys"
    for identity, role in identities.items():
        done = subprocess.run(
            [sys.executable, "-m", "services.cli", "keys", "generate", identity,
             "--role", role, "--dir", str(key_dir)],
            cwd=ROOT, capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
    return key_dir


@pytest.fixture(scope="module")
def worker_rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerRig]:
    data = tmp_path_factory.mktemp("third-party-controller")
    commands, intake = (f"tcp://127.0.0.1:{port}" for port in free_ports(2))
    key_dir = make_keys(data, {"controller": "controller", WORKER: "worker"})
    peer = ControllerPeer(commands, intake, WORKER, Keys(str(key_dir), "controller"))
    services = ServiceProcesses(data / "logs")
    rig = WorkerRig(peer, services)
    try:
        services.start_service(
            WORKER,
            "worker",
            {
                "LEYLINE_WORKER_ID": WORKER,
                "LEYLINE_WORKER_COMMANDS": f"controller@{commands}",
                "LEYLINE_WORKER_INTAKE": f'["controller@{intake}"]',
                "LEYLINE_BUS_KEYS_DIR": str(key_dir),
                "LEYLINE_WORKER_EPOCHS": str(EPOCHS),
                "LEYLINE_WORKER_MAX_EPOCHS_PRESET": str(MAX_EPOCHS_PRESET),
                "LEYLINE_WORKER_DATA_DIR": str(data),
                "LEYLINE_WORKER_SEED": "1",
            },
        )

        def hello() -> Message | None:
            found = peer.inbox.find("WorkerHello.v1", worker_id=WORKER)
            return found[0] if found else None

        rig.hello = wait_until(
            hello, START_TIMEOUT_S, "the worker's hello", pause=peer.pump, context=rig.log_tails
        )
        yield rig
    finally:
        services.close()
        peer.close()


@pytest.mark.slow
def test_a_fresh_worker_says_hello_with_its_default_sequence_left_out(
    worker_rig: WorkerRig,
) -> None:
    hello = worker_rig.hello
    assert hello is not None
    assert (hello.channel, hello.scope, hello.header.sender) == ("ack", WORKER, WORKER)
    assert hello.payload == {"type": "WorkerHello.v1", "worker_id": WORKER}
    assert WORKER in worker_rig.peer.intake.ready["ack"]  # its Ready answered our subscription


@pytest.mark.slow
def test_worker_applies_journal_sequence_1_and_never_twice(worker_rig: WorkerRig) -> None:
    peer = worker_rig.peer
    germinate = adaptation_command(
        GERMINATE, 1, target_slot_id="block3_post", blueprint_id="norm", reason="third party"
    )
    ack = worker_rig.send_and_answer(germinate)
    assert (ack["outcome"], ack["command_type"], ack["sequence"]) == (APPLIED, GERMINATE, 1)
    assert ack["stage_after"] == GERMINATED

    # A resend: the same command under a new header sequence gets the same ack again.
    again = worker_rig.send_and_answer(germinate)
    assert again == ack

    # Another command reusing an applied journal sequence is a duplicate, not applied.
    reused = adaptation_command(GERMINATE, 1, target_slot_id="block2_post", blueprint_id="norm")
    duplicate = worker_rig.send_and_answer(reused)
    assert (duplicate["outcome"], duplicate["sequence"]) == (DUPLICATE, 1)
    germinated = [
        m
        for m in peer.inbox.find("TelemetryEvent.v2", event_type=SEED_GERMINATED)
        if m.scope == WORKER
    ]
    assert [m.payload["slot_id"] for m in germinated] == ["block3_post"]


@pytest.mark.slow
def test_worker_rejects_an_illegal_command_by_name(worker_rig: WorkerRig) -> None:
    cull = adaptation_command(CULL, 2, target_slot_id="block2_post")
    ack = worker_rig.send_and_answer(cull)
    assert (ack["outcome"], ack["reason"], ack["sequence"]) == (
        REJECTED,
        "illegal_transition",
        2,
    )
    assert "DORMANT -> CULLED" in ack["detail"]


@pytest.mark.slow
def test_worker_refuses_a_command_that_breaks_its_contract(worker_rig: WorkerRig) -> None:
    peer = worker_rig.peer
    too_bright = adaptation_command(SET_ALPHA, 0, target_slot_id="block3_post", alpha_value=5.0)
    peer.send(too_bright)

    def refused() -> dict[str, Any] | None:
        for message in peer.inbox.find("TelemetryEvent.v2", event_type=CONTRACT_VIOLATION):
            payload = message.payload["payload"]
            if payload["topic"] == f"cmd.{WORKER}." and payload["reason"] == "invalid_value":
                return dict(payload)
        return None

    violation = wait_until(refused, ANSWER_TIMEOUT_S, "the refusal", pause=peer.pump)
    assert violation["kind"] == "ContractViolation"
    assert violation["sender"] == "controller"
    assert "AdaptationCommand.v2" in violation["detail"]


# -- the peer as a worker, commanded by a real controller ----------------------------------


class ControllerRig:
    """A real controller process and the peer in a worker's seat."""

    def __init__(self, peer: WorkerPeer, services: ServiceProcesses, journal: Path) -> None:
        self.peer = peer
        self.services = services
        self.journal = journal

    def log_tails(self) -> str:
        return self.services.log_tails()

    def outcome(self, command_id: str) -> str | None:
        if not self.journal.is_file():
            return None
        sql = "SELECT outcome FROM commands WHERE command_id = ?"
        rows = query(self.journal, sql, [command_id])
        return rows[0][0] if rows and rows[0][0] is not None else None


@pytest.fixture(scope="module")
def controller_rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControllerRig]:
    data = tmp_path_factory.mktemp("third-party-worker")
    commands, intake, sink = (f"tcp://127.0.0.1:{port}" for port in free_ports(3))
    journal = data / "controller-journal.db"
    services = ServiceProcesses(data / "logs")
    key_dir = make_keys(data, {"controller": "controller", "sink": "sink", "w9": "worker"})
    peer = WorkerPeer("w9", commands, f"{intake}", Keys(str(key_dir), "w9"))
    rig = ControllerRig(peer, services, journal)
    try:
        services.start_service(
            "controller",
            "controller",
            {
                "LEYLINE_CONTROLLER_COMMANDS": commands,
                "LEYLINE_CONTROLLER_INTAKE": intake,
                "LEYLINE_CONTROLLER_SINK": f"sink@{sink}",
                "LEYLINE_BUS_KEYS_DIR": str(key_dir),
                "LEYLINE_CONTROLLER_JOURNAL": str(journal),
                "LEYLINE_CONTROLLER_DEVICE": "cpu",
                "LEYLINE_CONTROLLER_ACK_TIMEOUT_S": str(ACK_TIMEOUT_S),
            },
        )

        def connected() -> bool | None:
            heard = "controller" in peer.commands.ready.get("cmd", set())
            return (heard and peer.out.subscribed(b"sig.w9.")) or None

        wait_until(
            connected, START_TIMEOUT_S, "the controller", pause=peer.pump, context=rig.log_tails
        )
        yield rig
    finally:
        services.close()
        peer.close()


@pytest.mark.slow
def test_controller_germinates_on_a_plateau_and_stops_resending_once_acked(
    controller_rig: ControllerRig,
) -> None:
    peer = controller_rig.peer
    peer.hello()
    for epoch in range(1, 7):  # the heuristic: past 5 warm-up epochs, plateau of 3 or more
        peer.signal(epoch, plateau_epochs=max(0, epoch - 2))

    def commands() -> list[Message] | None:
        found = peer.inbox.find("AdaptationCommand.v2")
        return found if len(found) >= 2 else None  # the command, then its first resend

    found = wait_until(
        commands,
        ANSWER_TIMEOUT_S,
        "a command and its resend",
        pause=peer.pump,
        context=controller_rig.log_tails,
    )
    first, resent = found[:2]
    command = first.payload
    assert (first.channel, first.scope, first.header.sender) == ("cmd", "w9", "controller")
    assert command.get("command_type", GERMINATE) == GERMINATE
    assert command["sequence"] == 1 and command["blueprint_id"]
    assert command["target_slot_id"] == "block2_post"
    assert resent.payload == command
    assert resent.header.sequence > first.header.sequence

    peer.ack(command, APPLIED, stage_after=GERMINATED, epoch=6)
    settled = wait_until(
        lambda: controller_rig.outcome(command["command_id"]),
        ANSWER_TIMEOUT_S,
        "the journal to record the ack",
        pause=peer.pump,
    )
    assert settled == "APPLIED"

    # Nothing is in flight now. Every heartbeat on `cmd.*.` announces the last sequence sent
    # on our topic; it stays put for longer than the next resend's backoff. (The first beat
    # after the mark may have been on its way before the ack was settled: it is not judged.)
    mark = len(peer.inbox.messages)

    def beats_after_settling() -> list[Message] | None:
        beats = [m for m in peer.inbox.messages[mark:] if m.tag == "Heartbeat.v2"][1:]
        span_ms = sum(b.payload["interval_ms"] for b in beats)
        return beats if span_ms > 4 * ACK_TIMEOUT_S * 1000 else None

    beats = wait_until(beats_after_settling, ANSWER_TIMEOUT_S, "heartbeats", pause=peer.pump)
    last_sent = max(m.header.sequence for m in peer.inbox.find("AdaptationCommand.v2"))
    assert {b.payload["last_sequences"]["cmd.w9."] for b in beats} == {last_sent}
