"""The one socket factory: every ZeroMQ option Leyline uses is set here.

Defaults, and why:
- high-water marks of 10,000 messages bound memory per peer at ~3 MB for hot-path messages
  (~300 B each) while absorbing a whole epoch's burst from 1,000 slots without a drop;
- the payload budget (64 KiB) is the pipeline's: a larger frame is refused OVERSIZE, counted;
- ZMQ_MAXMSGSIZE, 4x that, caps one frame's memory: libzmq drops a connection that exceeds it
  (bus/monitor.py attaches it again, counted); a frame between the two reaches the pipeline;
- an XPUB takes only subscriptions (69 B at most): its cap is 1 KiB, and its receive HWM 100
  bounds a flood under libzmq's habit of moving the whole pipe into an unbounded list;
- linger 500 ms lets a closing publisher flush its last acks and telemetry without hanging
  shutdown on a dead peer;
- reconnect 100 ms doubling to 5 s: a restarted peer is back within a tenth of a second and a
  dead one is not hammered;
- TCP keepalive and ZMTP heartbeats (1 s, timeout 5 s) detect a silently dead peer.
"""

from __future__ import annotations

from typing import Literal

import msgspec
import zmq

from leyline import DEFAULT_BUDGETS


class SocketOptions(msgspec.Struct, frozen=True, kw_only=True):
    """Transport options, validated; see the module docstring for the defaults."""

    send_hwm: int = msgspec.field(default=10_000)
    receive_hwm: int = 10_000
    linger_ms: int = 500
    max_message_bytes: int = 4 * DEFAULT_BUDGETS.max_payload_bytes
    reconnect_ms: int = 100
    reconnect_max_ms: int = 5_000
    tcp_keepalive: bool = True
    tcp_keepalive_idle_s: int = 30
    tcp_keepalive_interval_s: int = 10
    tcp_keepalive_count: int = 3
    heartbeat_ms: int = 1_000
    heartbeat_timeout_ms: int = 5_000

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

SocketKind = Literal["xpub", "sub", "xsub", "pub"]
_KINDS = {"xpub": zmq.XPUB, "sub": zmq.SUB, "xsub": zmq.XSUB, "pub": zmq.PUB}


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
    sock.setsockopt(zmq.LINGER, o.linger_ms)
    # The header and topic frames are tiny; the cap binds the payload frame.
    sock.setsockopt(zmq.MAXMSGSIZE, o.max_message_bytes)
    sock.setsockopt(zmq.RECONNECT_IVL, o.reconnect_ms)
    sock.setsockopt(zmq.RECONNECT_IVL_MAX, o.reconnect_max_ms)
    sock.setsockopt(zmq.TCP_KEEPALIVE, 1 if o.tcp_keepalive else 0)
    if o.tcp_keepalive:
        sock.setsockopt(zmq.TCP_KEEPALIVE_IDLE, o.tcp_keepalive_idle_s)
        sock.setsockopt(zmq.TCP_KEEPALIVE_INTVL, o.tcp_keepalive_interval_s)
        sock.setsockopt(zmq.TCP_KEEPALIVE_CNT, o.tcp_keepalive_count)
    sock.setsockopt(zmq.HEARTBEAT_IVL, o.heartbeat_ms)
    sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, o.heartbeat_timeout_ms)
    sock.setsockopt(zmq.HEARTBEAT_TTL, o.heartbeat_timeout_ms)
    if kind == "xpub":
        # Every subscription reaches us (so each new subscriber gets its Ready), and a full
        # queue makes send fail instead of dropping silently, so drops are counted.
        sock.setsockopt(zmq.XPUB_VERBOSE, 1)
        sock.setsockopt(zmq.XPUB_NODROP, 1)
        sock.setsockopt(zmq.MAXMSGSIZE, XPUB_MAX_MESSAGE_BYTES)
        sock.setsockopt(zmq.RCVHWM, XPUB_RECEIVE_HWM)
    return sock


def attach(sock: zmq.Socket[bytes], address: str, bind: bool) -> str:
    """Bind or connect `sock` to `address`; returns the concrete address (resolved port)."""
    if bind:
        sock.bind(address)
        resolved: str = sock.getsockopt_string(zmq.LAST_ENDPOINT)
        return resolved
    sock.connect(address)
    return address
