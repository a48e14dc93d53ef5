"""An XSUB/XPUB proxy for many-to-many topologies, counting what it forwards.

With CURVE both sides are servers: publishers and subscribers connect pinning the proxy's
key. The proxy checks each message's header sender against the identity its publisher
authenticated as (and that identity's right to the topic) before forwarding it, so a
subscriber can believe the sender a proxy-role connection relays.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import zmq

from bus.header import count_of, read_header, split_topic
from bus.identity import IdentityPolicy
from bus.security import Curve
from bus.sockets import DEFAULT_SOCKET_OPTIONS, SocketOptions, attach, make_socket
from bus.topics import parse_topic
from leyline import ContractError

_USER_ID = b"User-Id"


class ProxyMetrics:
    """Messages (each of a batch) and bytes forwarded downstream, subscriptions upstream."""

    def __init__(self) -> None:
        self.messages = 0
        self.bytes = 0
        self.subscriptions = 0
        self.dropped = 0
        #: Messages not forwarded: forged sender, not permitted, or unreadable topic/header.
        self.refused = 0

    def samples(self) -> Iterable[tuple[str, dict[str, str], float]]:
        yield "leyline_proxy_messages_total", {}, self.messages
        yield "leyline_proxy_bytes_total", {}, self.bytes
        yield "leyline_proxy_subscriptions_total", {}, self.subscriptions
        yield "leyline_proxy_dropped_total", {}, self.dropped
        yield "leyline_proxy_refused_total", {}, self.refused


class Proxy:
    """Publishers connect to `frontend` (XSUB), subscribers to `backend` (XPUB).

    The backend is verbose, so every subscriber's subscription reaches the publishers and each
    gets its own `Ready`; a full downstream queue drops, counted, instead of blocking everyone.
    """

    def __init__(
        self,
        frontend: str,
        backend: str,
        *,
        context: zmq.Context[zmq.Socket[bytes]] | None = None,
        options: SocketOptions = DEFAULT_SOCKET_OPTIONS,
        security: Curve | None = None,
    ) -> None:
        self._context = context or zmq.Context.instance()
        self._front = make_socket(self._context, "xsub", options)
        self._back = make_socket(self._context, "xpub", options)
        self._identity: IdentityPolicy | None = None
        if security is not None:
            security.serve(self._front)
            security.serve(self._back)
            self._identity = IdentityPolicy(security.trust)
        self.frontend = attach(self._front, frontend, bind=True)
        self.backend = attach(self._back, backend, bind=True)
        self.metrics = ProxyMetrics()
        self._poller = zmq.Poller()
        self._poller.register(self._front, zmq.POLLIN)
        self._poller.register(self._back, zmq.POLLIN)

    def step(self, timeout_s: float = 0.1) -> None:
        """Forward whatever is ready in either direction."""
        events = dict(self._poller.poll(int(timeout_s * 1000)))
        if self._back in events:
            while True:
                try:
                    subscription = self._back.recv(zmq.NOBLOCK)
                except zmq.Again:
                    break
                self._front.send(subscription)
                self.metrics.subscriptions += 1
        if self._front in events:
            while True:
                try:
                    frames = self._front.recv_multipart(zmq.NOBLOCK, copy=False)
                except zmq.Again:
                    break
                if not self._admissible(frames):
                    self.metrics.refused += 1
                    continue
                try:
                    self._back.send_multipart(frames, zmq.NOBLOCK)
                except zmq.Again:
                    self.metrics.dropped += 1
                    continue
                data = frames[0].bytes
                self.metrics.messages += count_of(data)
                self.metrics.bytes += sum(len(frame.bytes) for frame in frames)

    def _admissible(self, frames: list[zmq.Frame]) -> bool:
        """Whether a frame's sender is its publisher's authenticated identity, checked once for
        every message of a batch (plaintext: anything is forwarded; the subscribers'
        pipelines still check everything else)."""
        if self._identity is None:
            return True
        if len(frames) != 1:
            return False
        try:
            frame = frames[0].bytes
            name, start = split_topic(frame)
            channel, scope = parse_topic(name)
            header, _, _ = read_header(frame, start)
            peer = frames[0].get(_USER_ID)
        except (ContractError, zmq.ZMQError):
            return False
        return self._identity.check(peer, header.sender, channel, scope) is None

    def run(self, should_stop: Callable[[], bool]) -> None:
        while not should_stop():
            self.step()

    def close(self) -> None:
        self._front.close()
        self._back.close()
