"""Replay of recent messages: a bounded window at the publisher, requests from subscribers.

A publisher with a window keeps the last `size` messages of every topic it publishes on
(except fast signals, where only the freshest matters) and answers `ReplayRequest`s on a
ROUTER socket whose address it announces in its heartbeats. A subscriber that found a gap
asks over a DEALER socket; each replayed message is its own wire frame with its original
header (same sequence, same send time) and goes through the same pipeline, so storing them
is idempotent. A `ReplayDone` closes each answer and says what the window no longer held:
those messages are lost for good.
"""

from __future__ import annotations

import contextlib
import time
from collections import deque
from collections.abc import Callable
from typing import NamedTuple, Protocol

import zmq

from bus.header import TERMINATOR, encode_head
from bus.security import Curve
from bus.sockets import DEFAULT_SOCKET_OPTIONS, SocketOptions, attach, make_socket
from bus.topics import CONTROL_SCOPE, Channel, control_topic, parse_topic
from leyline import ContractError, ReplayDone, ReplayRequest
from leyline.wire import REGISTRY

_REQUESTS = REGISTRY.decoder([ReplayRequest])
_ENCODER = REGISTRY.encoder()
#: How long a replay socket may sit unused before the client closes it.
IDLE_CLOSE_S = 30.0
#: How a control topic (here, a ReplayDone's) ends.
_CONTROL = f".{CONTROL_SCOPE}.".encode()


class Window(Protocol):
    """Where a replay server finds the messages it is asked for."""

    size: int
    incarnation: int

    def record(self, topic: bytes, sequence: int, header: bytes, payload: bytes) -> None:
        """Keep one message: `header` is its single-message header (bus/header.py)."""

    def between(
        self, topic: bytes, incarnation: int, first: int, last: int
    ) -> list[tuple[int, bytes, bytes]]: ...

    def oldest(self, topic: bytes, incarnation: int) -> int: ...


class ReplayWindow:
    """The last `size` (sequence, header, payload) of each topic, in memory, this incarnation."""

    def __init__(self, size: int, incarnation: int) -> None:
        self.size = size
        self.incarnation = incarnation
        self._topics: dict[bytes, deque[tuple[int, bytes, bytes]]] = {}

    def record(self, topic: bytes, sequence: int, header: bytes, payload: bytes) -> None:
        kept = self._topics.get(topic)
        if kept is None:
            kept = self._topics[topic] = deque(maxlen=self.size)
        kept.append((sequence, header, payload))

    def between(
        self, topic: bytes, incarnation: int, first: int, last: int
    ) -> list[tuple[int, bytes, bytes]]:
        """The kept messages with `first` <= sequence <= `last`, in order."""
        if incarnation != self.incarnation:
            return []
        return [item for item in self._topics.get(topic, ()) if first <= item[0] <= last]

    def oldest(self, topic: bytes, incarnation: int) -> int:
        """The oldest sequence kept for `topic`; 0 when none is."""
        kept = self._topics.get(topic) if incarnation == self.incarnation else None
        return kept[0][0] if kept else 0


class ReplayServer:
    """Answers replay requests from a window, on a ROUTER socket."""

    def __init__(
        self,
        context: zmq.Context[zmq.Socket[bytes]],
        address: str,
        window: Window,
        sender_id: str,
        incarnation: int,
        security: Curve | None = None,
        options: SocketOptions = DEFAULT_SOCKET_OPTIONS,
    ) -> None:
        # From the factory, for its listen backlog above all: every worker that found the same
        # gap (a restarted controller) connects at once, past libzmq's default of 100.
        self._socket = make_socket(context, "router", options)
        if security is not None:
            security.serve(self._socket)  # only trusted keys may ask for a replay
        self._socket.setsockopt(zmq.LINGER, 0)
        # Room for a whole window's answer: a smaller queue would drop part of a replay.
        self._socket.setsockopt(zmq.SNDHWM, 4 * window.size + 16)
        self._socket.setsockopt(zmq.MAXMSGSIZE, 4096)  # requests are tiny
        self.endpoint = attach(self._socket, address, bind=True)
        self.window = window
        self._sender = sender_id
        self._incarnation = incarnation
        self.served = 0

    def serve(self) -> None:
        """Answer every queued request without blocking; malformed requests are ignored."""
        while True:
            try:
                frames = self._socket.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            if len(frames) != 2:
                continue
            identity, body = frames
            try:
                request = _REQUESTS.decode(body)
                channel, _ = parse_topic(request.topic.encode())
            except ContractError:
                continue
            self._answer(identity, channel, request)

    def _answer(self, identity: bytes, channel: Channel, request: ReplayRequest) -> None:
        topic = request.topic.encode()
        kept = self.window.between(topic, request.incarnation, request.first, request.last)
        for _, header, payload in kept:
            self._send([identity, b"".join((topic, TERMINATOR, header, payload))])
        oldest = self.window.oldest(topic, request.incarnation)
        done = ReplayDone(
            topic=request.topic,
            incarnation=request.incarnation,
            first=request.first,
            last=request.last,
            oldest_kept=oldest,
            resent=len(kept),
        )
        head = encode_head(self._sender.encode(), self._incarnation, 0, 0)
        done_frame = b"".join((control_topic(channel), TERMINATOR, head, _ENCODER.encode(done)))
        self._send([identity, done_frame])
        self.served += 1

    def _send(self, frames: list[bytes]) -> None:
        # A requester that is gone or flooded times out and records the loss itself.
        with contextlib.suppress(zmq.Again):
            self._socket.send_multipart(frames, zmq.NOBLOCK)

    def close(self) -> None:
        self._socket.close()


class Replayed(NamedTuple):
    """One replayed message (its parts: one frame on wire v2) and the publisher whose pinned
    key its connection proved."""

    peer: str
    frames: list[bytes]


class _Connection:
    """One replay endpoint's socket, what it still owes, and when it was last used."""

    __slots__ = ("owed", "socket", "used")

    def __init__(self, sock: zmq.Socket[bytes], now: float) -> None:
        self.socket = sock
        self.owed = 0  # requests whose ReplayDone has not come
        self.used = now


class ReplayClient:
    """Sends replay requests to publishers' endpoints and collects the answers.

    With `security`, each endpoint's socket pins the key of the publisher that announced it,
    so a replay can only come from that publisher. Only sockets that owe an answer are read,
    and one unused for `idle_close_s` is closed (its CURVE session with it), so a sink that
    repaired a gap of each of a thousand workers does not keep a thousand sockets open.
    """

    def __init__(
        self,
        context: zmq.Context[zmq.Socket[bytes]] | None = None,
        options: SocketOptions = DEFAULT_SOCKET_OPTIONS,
        security: Curve | None = None,
        idle_close_s: float = IDLE_CLOSE_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._context = context or zmq.Context.instance()
        self._options = options
        self._security = security
        self._idle_close_s = idle_close_s
        self._clock = clock
        self._next_sweep = 0.0
        self._connections: dict[tuple[str, str], _Connection] = {}
        self._owing: dict[tuple[str, str], _Connection] = {}

    @property
    def open_sockets(self) -> int:
        return len(self._connections)

    def request(self, peer: str, endpoint: str, request: ReplayRequest) -> bool:
        """Ask `peer`'s `endpoint` for a replay; False when the request could not be queued."""
        key = (peer, endpoint)
        now = self._clock()
        connection = self._connections.get(key)
        if connection is None:
            sock = make_socket(self._context, "dealer", self._options)
            sock.setsockopt(zmq.LINGER, 0)
            if self._security is not None:
                self._security.pin(sock, peer)
            sock.connect(endpoint)
            connection = self._connections[key] = _Connection(sock, now)
        try:
            connection.socket.send(_ENCODER.encode(request), zmq.NOBLOCK)
        except zmq.Again:
            return False
        connection.owed += 1
        connection.used = now
        self._owing[key] = connection
        return True

    def drain(self, limit: int = 1024) -> list[Replayed]:
        """The answers that have arrived, each one wire frame, from the sockets owing one."""
        received: list[Replayed] = []
        now = self._clock()
        settled = []
        for key, connection in self._owing.items():
            while len(received) < limit:
                try:
                    frames = connection.socket.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                received.append(Replayed(key[0], frames))
                connection.used = now
                if frames[0].split(TERMINATOR, 1)[0].endswith(_CONTROL):
                    connection.owed -= 1  # a ReplayDone: one answer complete
                    if connection.owed <= 0:
                        settled.append(key)
                        break
        for key in settled:
            del self._owing[key]
        if now >= self._next_sweep:
            self._next_sweep = now + min(1.0, self._idle_close_s)
            self._close_idle(now)
        return received

    def _close_idle(self, now: float) -> None:
        """Close the sockets unused for `idle_close_s`: also those still owed an answer the
        requester has long given up on (it times a request out well before)."""
        idle = [k for k, c in self._connections.items() if now - c.used >= self._idle_close_s]
        for key in idle:
            self._connections.pop(key).socket.close()
            self._owing.pop(key, None)

    def close(self) -> None:
        for connection in self._connections.values():
            connection.socket.close()
        self._connections.clear()
        self._owing.clear()
