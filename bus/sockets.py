"""The one socket factory: every ZeroMQ option Leyline uses is set here.

Defaults, and why:
- high-water marks of 10,000 frames bound memory per peer: ~3 MB for lone hot-path messages
  (~300 B each), at most ~160 MB under a sustained burst (a frame batches at most 16 KiB,
  bus/publisher.py), while absorbing a whole epoch's burst from 1,000 slots without a drop;
- the payload budget (64 KiB) is the pipeline's: a larger frame is refused OVERSIZE, counted;
- ZMQ_MAXMSGSIZE, 4x that, caps one frame's memory: libzmq drops a connection that exceeds it
  (bus/monitor.py attaches it again, counted); a frame between the two reaches the pipeline;
- an XPUB takes only subscriptions (69 B at most): its cap is 1 KiB, and its receive HWM 100
  bounds a flood under libzmq's habit of moving the whole pipe into an unbounded list;
- linger 0.5 s lets a closing publisher flush its last acks and telemetry without hanging
  shutdown on a dead peer;
- reconnect 0.1 s doubling to 5 s: a restarted peer is back within a tenth of a second and a
  dead one is not hammered;
- TCP keepalive and ZMTP heartbeats (1 s, timeout 5 s) detect a silently dead peer;
- a listen backlog of 4,096 on every bound socket, replay servers' included (libzmq's default
  is 100; Linux caps it at net.core.somaxconn, 4,096 since 5.4): 1,024 workers connecting at
  once (a start, or a restarted controller) overflowed a backlog of 100 into tens of thousands
  of dropped connections, reset mid-handshake, and a dropped SYN is retried only after 1, 3,
  7 s (bench/scale.py). An endpoint's accept queue held up to 538 connections at 1,024
  workers (`ss -lnt`, 2 cores busy): size it to the peers that may connect at once.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec
import zmq
from zmq.backend import Socket as _BackendSocket
from zmq.backend import zmq_poll

from bus.monitor import ConnectionMonitor
from bus.rejection import Rejection
from bus.security import Curve, SecurityError, split_peer
from leyline.budgets import DEFAULT_BUDGETS


class SocketOptions(msgspec.Struct, frozen=True, kw_only=True):
    """Transport options, validated; see the module docstring for the defaults. Durations
    are in seconds, as everywhere in Leyline (libzmq's milliseconds are made at the socket)."""

    send_hwm: int = msgspec.field(default=10_000)
    receive_hwm: int = 10_000
    linger_s: float = 0.5
    max_message_bytes: int = 4 * DEFAULT_BUDGETS.max_payload_bytes
    reconnect_s: float = 0.1
    reconnect_max_s: float = 5.0
    tcp_keepalive: bool = True
    tcp_keepalive_idle_s: int = 30
    tcp_keepalive_interval_s: int = 10
    tcp_keepalive_count: int = 3
    heartbeat_s: float = 1.0
    heartbeat_timeout_s: float = 5.0
    listen_backlog: int = 4_096

    def __post_init__(self) -> None:
        for name in self.__struct_fields__:
            value = getattr(self, name)
            if not isinstance(value, bool) and value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}")


DEFAULT_SOCKET_OPTIONS = SocketOptions()
#: An XPUB's input is subscriptions: refused above 69 bytes, and each byte of a prefix costs
#: ~80 bytes in libzmq's subscription trie, so libzmq itself refuses anything longer than this.
XPUB_MAX_MESSAGE_BYTES = 1024
#: libzmq moves an XPUB's whole pipe into an unbounded list every 100 receives: a pipe of at
#: most 100 keeps what a flood queues there within what a bounded drain takes out.
XPUB_RECEIVE_HWM = 100

SocketKind = Literal["xpub", "sub", "xsub", "pub", "router", "dealer"]
_NOBLOCK = int(zmq.NOBLOCK)
_POLLIN = int(zmq.POLLIN)
#: pyzmq's compiled send: its Python `Socket.send` wrapper (routing ids and groups, which
#: Leyline never uses) costs a frame and a keyword call on every publish.
send_now = _BackendSocket.send
_KINDS = {
    "xpub": zmq.XPUB,
    "sub": zmq.SUB,
    "xsub": zmq.XSUB,
    "pub": zmq.PUB,
    "router": zmq.ROUTER,  # a replay server (bus/replay.py)
    "dealer": zmq.DEALER,  # a replay client
}


def make_socket(
    context: zmq.Context[zmq.Socket[bytes]],
    kind: SocketKind,
    options: SocketOptions = DEFAULT_SOCKET_OPTIONS,
) -> zmq.Socket[bytes]:
    """A socket of `kind` with every option of `options` applied."""
    sock = context.socket(_KINDS[kind])
    o = options
    sock.setsockopt(zmq.SNDHWM, o.send_hwm)
    sock.setsockopt(zmq.RCVHWM, o.receive_hwm)
    sock.setsockopt(zmq.LINGER, _ms(o.linger_s))
    # A frame holds one message or a batch (bus/publisher.py BATCH_BYTES): the cap binds both.
    sock.setsockopt(zmq.MAXMSGSIZE, o.max_message_bytes)
    sock.setsockopt(zmq.RECONNECT_IVL, _ms(o.reconnect_s))
    sock.setsockopt(zmq.RECONNECT_IVL_MAX, _ms(o.reconnect_max_s))
    sock.setsockopt(zmq.TCP_KEEPALIVE, 1 if o.tcp_keepalive else 0)
    if o.tcp_keepalive:
        sock.setsockopt(zmq.TCP_KEEPALIVE_IDLE, o.tcp_keepalive_idle_s)
        sock.setsockopt(zmq.TCP_KEEPALIVE_INTVL, o.tcp_keepalive_interval_s)
        sock.setsockopt(zmq.TCP_KEEPALIVE_CNT, o.tcp_keepalive_count)
    sock.setsockopt(zmq.HEARTBEAT_IVL, _ms(o.heartbeat_s))
    sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, _ms(o.heartbeat_timeout_s))
    sock.setsockopt(zmq.HEARTBEAT_TTL, _ms(o.heartbeat_timeout_s))
    sock.setsockopt(zmq.BACKLOG, o.listen_backlog)
    if kind == "xpub":
        # Every subscription reaches us (so each new subscriber gets its Ready), and a full
        # queue makes send fail instead of dropping silently, so drops are counted.
        sock.setsockopt(zmq.XPUB_VERBOSE, 1)
        sock.setsockopt(zmq.XPUB_NODROP, 1)
        sock.setsockopt(zmq.MAXMSGSIZE, XPUB_MAX_MESSAGE_BYTES)
        sock.setsockopt(zmq.RCVHWM, XPUB_RECEIVE_HWM)
    return sock


def _ms(seconds: float) -> int:
    """A duration in seconds (every duration Leyline takes) as libzmq's milliseconds."""
    return round(seconds * 1000)


def wait_ms(seconds: float) -> int:
    """A wait in seconds as libzmq's whole milliseconds, at least one when positive: a wait
    under a millisecond made 0 would poll without waiting, and a loop around it spin."""
    return max(1, round(seconds * 1000)) if seconds > 0 else 0


def attach(sock: zmq.Socket[bytes], address: str, bind: bool) -> str:
    """Bind or connect `sock` to `address`; returns the concrete address (resolved port)."""
    if bind:
        sock.bind(address)
        resolved: str = sock.getsockopt_string(zmq.LAST_ENDPOINT)
        return resolved
    sock.connect(address)
    return address


class Link:
    """One ZeroMQ socket of a group, and the identity its messages come from.

    A server socket (binds) learns each message's identity from its ZAP User-Id, so `peer`
    is None; a client socket (connects) talks only to the server whose key it pinned.
    """

    __slots__ = ("_items", "monitor", "peer", "socket")

    def __init__(self, socket: zmq.Socket[bytes], peer: str | None) -> None:
        self.socket = socket
        self.peer = peer
        self._items = [(socket, _POLLIN)]
        #: Re-attaches what this socket connected to when libzmq gives up on it, and names
        #: every handshake it refused.
        self.monitor = ConnectionMonitor(socket)

    def queued(self) -> bool:
        """Whether a receive would find a message now, without waiting.

        `zmq_poll` with no wait costs a third of `getsockopt(ZMQ_EVENTS)`, whose pyzmq
        wrapper looks the option up in a Python enum before the call (~1 us of its ~3 us
        here), and far less than the `zmq.Again` a receive on an empty socket raises
        (~8 us): it is asked once per drain and once per service pass (bench/bus.py).
        """
        return bool(zmq_poll(self._items, 0))


class SocketGroup:
    """The sockets behind one publisher or subscriber: one server socket for every bind, one
    client socket per server identity it connects to (CURVE pins one server key per socket).

    Without `security` (plaintext) every bind and connect shares one socket.
    """

    def __init__(
        self,
        context: zmq.Context[zmq.Socket[bytes]],
        kind: SocketKind,
        options: SocketOptions = DEFAULT_SOCKET_OPTIONS,
        security: Curve | None = None,
        prepare: Any = None,
    ) -> None:
        self._context = context
        self._kind = kind
        self._options = options
        self.security = security
        #: Called with each new socket before it binds or connects (subscriptions, say).
        self._prepare = prepare
        self._server: Link | None = None
        self._clients: dict[str | None, Link] = {}
        self.links: list[Link] = []
        self.addresses: list[str] = []

    def attach(self, address: str, bind: bool) -> str:
        """Bind or connect one more endpoint; connects name their server: `sink@tcp://...`."""
        identity, endpoint = split_peer(address)
        if self.security is None:
            link = self._shared()
        elif bind:
            link = self._server or self._new(server=True, peer=None)
            self._server = link
        else:
            if identity is None:
                raise SecurityError(
                    f"connect address {address!r} names no server identity to pin: "
                    f"write it as <identity>@{address}"
                )
            link = self._clients.get(identity) or self._new(server=False, peer=identity)
            self._clients[identity] = link
        resolved = attach(link.socket, endpoint, bind)
        if not bind:
            link.monitor.watch(resolved)
        self.addresses.append(resolved)
        return resolved

    def check_connections(self) -> list[Rejection]:
        """Re-attach the connections libzmq gave up on and name the handshakes it refused."""
        return [dropped for link in self.links for dropped in link.monitor.check()]

    def _shared(self) -> Link:
        link = self._clients.get(None)
        if link is None:
            link = self._clients[None] = self._new(server=False, peer=None)
        return link

    def _new(self, *, server: bool, peer: str | None) -> Link:
        sock = make_socket(self._context, self._kind, self._options)
        if self.security is not None:
            if server:
                self.security.serve(sock)
            else:
                assert peer is not None
                self.security.pin(sock, peer)
        if self._prepare is not None:
            self._prepare(sock)
        link = Link(sock, peer)
        self.links.append(link)
        return link

    def send_frame(self, frame: bytes) -> bool:
        """Send one frame on every socket; False if any socket's queue was full.

        With int flags: `send` with pyzmq's enum flags costs more than the send itself.
        """
        delivered = True
        for link in self.links:
            try:
                send_now(link.socket, frame, _NOBLOCK)
            except zmq.Again:
                delivered = False
        return delivered

    def recv(self) -> bytes | None:
        """The next queued message of any socket, or None: asks `Link.queued` first, which
        costs less than the `zmq.Again` a receive on an empty socket raises."""
        for link in self.links:
            if link.queued():
                data: bytes = link.socket.recv(_NOBLOCK)
                return data
        return None

    def poll(self, timeout_s: float, flags: int = zmq.POLLIN) -> bool:
        """Whether any link is ready for `flags` within `timeout_s`."""
        if not self.links:
            return False
        poller = zmq.Poller()
        for link in self.links:
            poller.register(link.socket, flags)
        return bool(poller.poll(wait_ms(timeout_s)))

    def close(self) -> None:
        for link in self.links:
            link.monitor.close()
            link.socket.close()
