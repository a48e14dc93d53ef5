"""A Leyline peer written from docs/protocol.md alone, with pyzmq and msgspec and nothing else.

It imports nothing of the project on purpose (a test reads this module's imports): whatever it
needs to know about the wire, it knows from the document. Section numbers below (§) are the
document's. Every socket is made by `open_socket`, the one place where CURVE keys are set
(§15): a client's key pair and the pinned server key, or a server's key pair and ZAP.
"""

from __future__ import annotations

import struct
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import msgspec
import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

WIRE_VERSION = 2  # §3
#: The fixed header (§3): version, flags, count, sender and correlation id lengths,
#: incarnation, first sequence, sent_ns; little-endian.
FIXED = struct.Struct("<BBHBBQQQ")
CONTROL_SCOPE = "*"  # §4
HEARTBEAT_TOPIC = b"cmd.*."  # §7
CHANNELS = ("cmd", "sig", "ack", "tel", "rep")  # §4

# Enum wire values (§11), only those this peer uses.
GERMINATE, CULL, SET_ALPHA = 1, 3, 4  # CommandType
APPLIED, REJECTED, DUPLICATE = 1, 2, 3  # AckOutcome
DORMANT, GERMINATED = 1, 2  # SeedStage
SEED_GERMINATED, CONTRACT_VIOLATION = 1, 14  # TelemetryEventType


@dataclass(frozen=True)
class Header:
    """One message's header (§3): a batch's messages share all but the sequence."""

    wire_version: int
    sender: str
    incarnation: int
    sequence: int
    sent_ns: int
    correlation_id: str | None = None

    def encode(self, count: int = 1) -> bytes:
        """The fixed header, sender and correlation id, for a body of `count` messages."""
        sender = self.sender.encode()
        correlation = (self.correlation_id or "").encode()
        fixed = FIXED.pack(
            self.wire_version,
            0,
            count,
            len(sender),
            len(correlation),
            self.incarnation,
            self.sequence,
            self.sent_ns,
        )
        return fixed + sender + correlation


def read_frame(frame: bytes) -> tuple[bytes, Header, int, bytes] | None:
    """Topic, header, message count and body of one frame (§3); None if it is not one."""
    end = frame.find(b"\x00", 0, 72)
    if end < 0 or len(frame) < end + 1 + FIXED.size:
        return None
    version, flags, count, sender_len, corr_len, incarnation, sequence, sent_ns = FIXED.unpack_from(
        frame, end + 1
    )
    at = end + 1 + FIXED.size
    body = at + sender_len + corr_len
    if version != WIRE_VERSION or flags or not count >= 1 or not sender_len or body > len(frame):
        return None
    try:
        sender = frame[at : at + sender_len].decode()
        correlation = frame[at + sender_len : body].decode() or None
    except UnicodeDecodeError:
        return None
    header = Header(version, sender, incarnation, sequence, sent_ns, correlation)
    return frame[:end], header, count, frame[body:]


@dataclass
class Keys:
    """This peer's CURVE key pair and the key directory it trusts (§15)."""

    key_dir: str
    identity: str
    _zap: dict[int, ThreadAuthenticator] = field(default_factory=dict)

    def pair(self) -> tuple[bytes, bytes]:
        public, secret = zmq.auth.load_certificate(
            f"{self.key_dir}/secret/{self.identity}.key_secret"
        )
        assert secret is not None
        return public, secret

    def public_key_of(self, identity: str) -> bytes:
        public, _ = zmq.auth.load_certificate(f"{self.key_dir}/trust/{identity}.key")
        return public

    def serve(self, context: zmq.Context[zmq.Socket[bytes]], sock: zmq.Socket[bytes]) -> None:
        """A CURVE server whose clients ZAP checks against trust/ (§15)."""
        if id(context) not in self._zap:
            zap = ThreadAuthenticator(context)
            zap.start()
            zap.configure_curve(domain="leyline", location=f"{self.key_dir}/trust")
            self._zap[id(context)] = zap
        sock.setsockopt(zmq.ZAP_DOMAIN, b"leyline")
        sock.curve_publickey, sock.curve_secretkey = self.pair()
        sock.curve_server = True

    def pin(self, sock: zmq.Socket[bytes], server: str) -> None:
        """A CURVE client that only talks to `server`'s key (§15)."""
        sock.curve_publickey, sock.curve_secretkey = self.pair()
        sock.curve_serverkey = self.public_key_of(server)

    def stop(self) -> None:
        for zap in self._zap.values():
            zap.stop()
        self._zap.clear()


def open_socket(
    context: zmq.Context[zmq.Socket[bytes]],
    kind: int,
    address: str,
    *,
    bind: bool,
    keys: Keys | None = None,
    server: str = "",
) -> zmq.Socket[bytes]:
    """A socket bound (CURVE server) or connected (pinning `server`'s key) to `address`."""
    sock = context.socket(kind)
    if keys is not None:
        if bind:
            keys.serve(context, sock)
        else:
            keys.pin(sock, server)
    sock.setsockopt(zmq.LINGER, 500)
    sock.setsockopt(zmq.MAXMSGSIZE, 262_144)  # §13: no frame above 256 KiB
    if kind == zmq.XPUB:
        sock.setsockopt(zmq.XPUB_VERBOSE, 1)  # see every subscription, to answer each (§6)
    if bind:
        sock.bind(address)
    else:
        sock.connect(address)
    return sock


def topic(channel: str, scope: str) -> bytes:
    """`<channel>.<scope>.` (§4)."""
    return f"{channel}.{scope}.".encode()


def now_utc() -> datetime:
    """A timezone-aware time: msgspec writes it as a msgpack timestamp extension (§12)."""
    return datetime.now(UTC)


def adaptation_command(command_type: int, journal_sequence: int, **fields: Any) -> dict[str, Any]:
    """An AdaptationCommand map (§5.1): fields in contract order, defaults left out (§5)."""
    body: dict[str, Any] = {
        "type": "AdaptationCommand.v2",
        "command_id": str(uuid.uuid4()),
        "timestamp": now_utc(),
    }
    if command_type != GERMINATE:  # GERMINATE is the default, so it is omitted
        body["command_type"] = command_type
    body.update(fields)
    if journal_sequence:
        body["sequence"] = journal_sequence
    return body


@dataclass(frozen=True)
class Message:
    """One received message: its topic split, its header and its decoded payload."""

    channel: str
    scope: str
    header: Header
    payload: Any

    @property
    def tag(self) -> str:
        """The payload's tag: the `type` key of a map, the first element of an array (§5)."""
        if isinstance(self.payload, dict):
            return str(self.payload.get("type", ""))
        return str(self.payload[0]) if self.payload else ""


class PeerPublisher:
    """An XPUB: numbers each topic's messages, answers subscriptions, heartbeats (§6-§8)."""

    def __init__(
        self,
        context: zmq.Context[zmq.Socket[bytes]],
        sender: str,
        address: str,
        *,
        bind: bool,
        keys: Keys | None = None,
        server: str = "",
    ) -> None:
        self.sender = sender
        self.incarnation = time.time_ns()  # §8: a new process life, a larger incarnation
        self.socket = open_socket(context, zmq.XPUB, address, bind=bind, keys=keys, server=server)
        self.sequences: dict[bytes, int] = {}
        self.subscriptions: list[bytes] = []
        self.heartbeat_ms = 1000
        self._next_beat = 0.0

    def publish(self, channel: str, scope: str, payload: Any) -> int:
        """Send one message on `<channel>.<scope>.` with the topic's next sequence."""
        name = topic(channel, scope)
        sequence = self.sequences.get(name, 0) + 1
        self.sequences[name] = sequence
        self._send(name, sequence, payload)
        return sequence

    def service(self) -> None:
        """Answer new subscriptions with Ready; heartbeat when due."""
        while True:
            try:
                event = self.socket.recv(zmq.NOBLOCK)
            except zmq.Again:
                break
            if event[:1] == b"\x01":
                prefix = event[1:]
                self.subscriptions.append(prefix)
                ready = {"type": "Ready.v1", "prefix": prefix.decode(), "publisher": self.sender}
                for channel in self._channels_of(prefix):
                    self._send(topic(channel, CONTROL_SCOPE), 0, ready)
        if time.monotonic() >= self._next_beat and self.subscriptions:
            # §7: one heartbeat for every channel, on the heartbeat topic `cmd.*.`.
            self._next_beat = time.monotonic() + self.heartbeat_ms / 1000
            beat = {
                "type": "Heartbeat.v2",
                "interval_ms": self.heartbeat_ms,
                "last_sequences": {name.decode(): seq for name, seq in self.sequences.items()},
            }
            self._send(HEARTBEAT_TOPIC, 0, beat)

    def subscribed(self, prefix: bytes) -> bool:
        """True once a subscription covering `prefix` has arrived."""
        return any(prefix.startswith(sub) for sub in self.subscriptions)

    def _channels_of(self, prefix: bytes) -> list[str]:
        name = prefix.split(b".", 1)[0].decode(errors="replace")
        if b"." in prefix:
            return [name] if name in CHANNELS else []
        return [c for c in CHANNELS if c.startswith(name)]

    def _send(self, name: bytes, sequence: int, payload: Any) -> None:
        header = Header(WIRE_VERSION, self.sender, self.incarnation, sequence, time.time_ns())
        self.socket.send(name + b"\x00" + header.encode() + msgspec.msgpack.encode(payload))


class PeerSubscriber:
    """A SUB that subscribes data prefixes first and control topics last (§6)."""

    def __init__(
        self,
        context: zmq.Context[zmq.Socket[bytes]],
        address: str,
        prefixes: Iterable[bytes],
        *,
        bind: bool,
        keys: Keys | None = None,
        server: str = "",
    ) -> None:
        self.socket = open_socket(context, zmq.SUB, address, bind=bind, keys=keys, server=server)
        wanted = list(prefixes)
        for prefix in wanted:
            self.socket.setsockopt(zmq.SUBSCRIBE, prefix)
        self.channels = sorted({p.split(b".", 1)[0].decode() for p in wanted})
        controls = [topic(channel, CONTROL_SCOPE) for channel in self.channels]
        for control in dict.fromkeys([*controls, HEARTBEAT_TOPIC]):  # §6, §7: the heartbeat's last
            self.socket.setsockopt(zmq.SUBSCRIBE, control)
        #: Publishers heard on each channel's control topic (a heartbeat: on every channel):
        #: proof our subscription arrived.
        self.ready: dict[str, set[str]] = {}
        #: The rest of a batch already received (§3).
        self._pending: list[Message] = []

    def receive(self, timeout_ms: int) -> Message | None:
        """The next message, or None after `timeout_ms`; control messages are noted too."""
        if self._pending:
            return self._pending.pop(0)
        if not self.socket.poll(timeout_ms, zmq.POLLIN):
            return None
        frames = self.socket.recv_multipart()
        read = read_frame(frames[0]) if len(frames) == 1 else None
        if read is None:
            return None
        name, header, count, body = read
        channel, _, rest = name.decode(errors="replace").partition(".")
        try:
            payloads = [msgspec.msgpack.decode(body)]
            if count > 1:
                payloads = payloads[0]
        except msgspec.DecodeError:
            return None
        if not isinstance(payloads, list) or len(payloads) != count:
            return None
        for index, payload in enumerate(payloads):
            nth = Header(
                header.wire_version,
                header.sender,
                header.incarnation,
                header.sequence + index,
                header.sent_ns,
                header.correlation_id,
            )
            self._pending.append(Message(channel, rest[:-1], nth, payload))
        if rest[:-1] == CONTROL_SCOPE:
            beat = (
                payloads[0].get("type") == "Heartbeat.v2"
                if isinstance(payloads[0], dict)
                else False
            )
            for heard in self.channels if beat else [channel]:
                self.ready.setdefault(heard, set()).add(header.sender)
        return self._pending.pop(0)


@dataclass
class Inbox:
    """Everything a peer received, kept for the test to search."""

    messages: list[Message] = field(default_factory=list)

    def collect(self, subscriber: PeerSubscriber, timeout_ms: int) -> None:
        """Wait up to `timeout_ms` for a message, then take every one already queued."""
        message = subscriber.receive(timeout_ms)
        while message is not None:
            self.messages.append(message)
            message = subscriber.receive(0)

    def find(self, tag: str, **fields: Any) -> list[Message]:
        """Messages with payload tag `tag` whose map has every `fields` item."""
        return [
            m
            for m in self.messages
            if m.tag == tag and all(m.payload.get(k) == v for k, v in fields.items())
        ]


class ControllerPeer:
    """The controller's seat: commands out on an XPUB, acks and telemetry in on a SUB (§2)."""

    def __init__(self, commands: str, intake: str, worker_id: str, keys: Keys) -> None:
        self.worker_id = worker_id
        self.keys = keys
        self.context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self.commands = PeerPublisher(self.context, "controller", commands, bind=True, keys=keys)
        prefixes = [topic(c, worker_id) for c in ("ack", "sig", "tel", "rep")]
        self.intake = PeerSubscriber(self.context, intake, prefixes, bind=True, keys=keys)
        self.inbox = Inbox()

    def pump(self, timeout_ms: int = 20) -> None:
        """Receive what arrived, answer subscriptions, heartbeat."""
        self.inbox.collect(self.intake, timeout_ms)
        self.commands.service()

    def send(self, command: dict[str, Any]) -> int:
        """Publish a command to the worker; a resend is the same map under a new header sequence."""
        return self.commands.publish("cmd", self.worker_id, command)

    def close(self) -> None:
        self.commands.socket.close()
        self.intake.socket.close()
        self.keys.stop()
        self.context.term()


class WorkerPeer:
    """A worker's seat: commands in on a SUB, signals and acks out on an XPUB (§2)."""

    def __init__(self, worker_id: str, commands: str, intake: str, keys: Keys) -> None:
        self.worker_id = worker_id
        self.keys = keys
        self.context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self.commands = PeerSubscriber(
            self.context,
            commands,
            [topic("cmd", worker_id)],
            bind=False,
            keys=keys,
            server="controller",
        )
        self.out = PeerPublisher(
            self.context, worker_id, intake, bind=False, keys=keys, server="controller"
        )
        self.inbox = Inbox()

    def pump(self, timeout_ms: int = 20) -> None:
        """Receive what arrived, answer subscriptions, heartbeat."""
        self.inbox.collect(self.commands, timeout_ms)
        self.out.service()

    def hello(self, last_applied_sequence: int = 0) -> None:
        """WorkerHello (§10.3): 0 is the default, so a fresh worker's hello leaves it out."""
        hello: dict[str, Any] = {"type": "WorkerHello.v1", "worker_id": self.worker_id}
        if last_applied_sequence:
            hello["last_applied_sequence"] = last_applied_sequence
        self.out.publish("ack", self.worker_id, hello)

    def signal(self, epoch: int, plateau_epochs: int, slot_index: int = 0) -> None:
        """A FastTrainingSignals array (§5.2): an empty slot that has stopped improving."""
        history = [0.5] * 5
        accuracy = [90.0] * 5
        row = [
            "FastTrainingSignals.v1",
            epoch, epoch * 100, 0.5, 0.5, 0.0, 90.0, 90.0, 0.0, plateau_epochs, 90.0, 0.5,
            history, accuracy,
            0, DORMANT, 0, 0.0, 0.0, 1, slot_index,
        ]  # fmt: skip
        self.out.publish("sig", self.worker_id, row)

    def ack(self, command: dict[str, Any], outcome: int, **fields: Any) -> None:
        """A CommandAck (§5.1, §10.2) for a received command map."""
        ack = {
            "type": "CommandAck.v1",
            "command_id": command["command_id"],
            "worker_id": self.worker_id,
            "outcome": outcome,
            "command_type": command.get("command_type", GERMINATE),
            "sequence": command.get("sequence", 0),
            **fields,
        }
        self.out.publish("ack", self.worker_id, ack)

    def close(self) -> None:
        self.commands.socket.close()
        self.out.socket.close()
        self.keys.stop()
        self.context.term()
