"""Connections libzmq gave up on, and handshakes it refused, seen through its socket monitor.

libzmq reconnects a connection it lost to the network by itself, but ends for good one it
dropped for a protocol error, such as a frame above ZMQ_MAXMSGSIZE: the socket then stays deaf
to that peer with no error anywhere. The monitor events say which happened: a disconnect that
libzmq will retry is followed at once by a retry event; one it gave up on is not.

The same events name refused handshakes (a key ZAP did not trust, a NULL-mechanism peer on a
CURVE socket), so each is counted by its reason. Garbage instead of a greeting is the one
refusal libzmq reports only as a disconnect, which no event tells apart from a peer leaving.
"""

from __future__ import annotations

import contextlib
import time

import zmq
from zmq.backend import zmq_poll
from zmq.utils.monitor import recv_monitor_message

from bus.rejection import Rejection
from leyline import RejectReason

#: libzmq schedules its retry on its I/O thread right after the disconnect; an endpoint still
#: without one this long after is one it gave up on.
GIVE_UP_AFTER_S = 0.5

_HANDSHAKE_REFUSED: dict[int, tuple[RejectReason, str]] = {
    zmq.EVENT_HANDSHAKE_FAILED_AUTH: (RejectReason.UNAUTHENTICATED, "a key ZAP does not trust"),
    zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL: (
        RejectReason.HANDSHAKE_FAILED,
        "a protocol error: another security mechanism (NULL against CURVE) or a bad greeting",
    ),
    zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL: (
        RejectReason.HANDSHAKE_FAILED,
        "the peer broke off during the handshake",
    ),
}
_EVENTS = zmq.EVENT_DISCONNECTED | zmq.EVENT_CONNECT_RETRIED | zmq.EVENT_CONNECTED
for _refused in _HANDSHAKE_REFUSED:
    _EVENTS |= _refused
_POLLIN = int(zmq.POLLIN)


class ConnectionMonitor:
    """Watches the endpoints a socket connected to and re-attaches those libzmq gave up on."""

    def __init__(self, sock: zmq.Socket[bytes], give_up_after_s: float = GIVE_UP_AFTER_S) -> None:
        self._socket = sock
        self._events: zmq.Socket[bytes] = sock.get_monitor_socket(_EVENTS)
        self._items = [(self._events, _POLLIN)]
        self._give_up_ns = int(give_up_after_s * 1e9)
        self._endpoints: set[str] = set()
        #: Endpoint -> when libzmq dropped it, until a retry or a connection shows up.
        self._dropped: dict[str, int] = {}

    def watch(self, endpoint: str) -> None:
        """Re-attach `endpoint`, which the socket connected to, whenever libzmq gives up on it."""
        self._endpoints.add(endpoint)

    def check(self, now_ns: int | None = None) -> list[Rejection]:
        """Read the pending events: re-attach what was given up on (CONNECTION_DROPPED), and
        name each refused handshake (UNAUTHENTICATED, HANDSHAKE_FAILED); one rejection each,
        which the owner counts and reports.
        """
        now = now_ns if now_ns is not None else time.monotonic_ns()
        events = self._events
        refused: list[Rejection] = []
        while zmq_poll(self._items, 0):  # a third of getsockopt(ZMQ_EVENTS)'s cost
            event = recv_monitor_message(events, zmq.NOBLOCK)
            endpoint = event["endpoint"].decode()
            handshake = _HANDSHAKE_REFUSED.get(event["event"])
            if handshake is not None:
                reason, what = handshake
                detail = f"handshake refused on {endpoint}: {what} (code {event['value']})"
                refused.append(Rejection(reason=reason, sender="?", topic="", detail=detail))
                continue
            if endpoint not in self._endpoints:
                continue
            if event["event"] == zmq.EVENT_DISCONNECTED:
                self._dropped.setdefault(endpoint, now)
            else:
                self._dropped.pop(endpoint, None)
        given_up = [e for e, since in self._dropped.items() if now - since >= self._give_up_ns]
        return refused + [self._reattach(endpoint) for endpoint in given_up]

    def close(self) -> None:
        """Stop monitoring; call before closing the socket (again later does nothing)."""
        if not self._socket.closed:
            self._socket.disable_monitor()
        self._events.close()

    def _reattach(self, endpoint: str) -> Rejection:
        del self._dropped[endpoint]
        with contextlib.suppress(zmq.ZMQError):  # libzmq may have forgotten it already
            self._socket.disconnect(endpoint)
        self._socket.connect(endpoint)
        return Rejection(
            reason=RejectReason.CONNECTION_DROPPED,
            sender="?",
            topic="",
            detail=f"libzmq dropped {endpoint} for a protocol error, such as a frame over "
            "ZMQ_MAXMSGSIZE, and would not reconnect; attached again",
        )
