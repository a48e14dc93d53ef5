"""Socket options: every one applied to the libzmq socket, durations given in seconds."""

from __future__ import annotations

import pytest
import zmq

from bus import SocketOptions
from bus.sockets import make_socket


def test_durations_in_seconds_reach_libzmq_as_milliseconds() -> None:
    options = SocketOptions(
        linger_s=0.25,
        reconnect_s=0.05,
        reconnect_max_s=2.5,
        heartbeat_s=0.75,
        heartbeat_timeout_s=3.0,
        listen_backlog=512,
    )
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    sock = make_socket(context, "sub", options)
    try:
        assert sock.getsockopt(zmq.LINGER) == 250
        assert sock.getsockopt(zmq.RECONNECT_IVL) == 50
        assert sock.getsockopt(zmq.RECONNECT_IVL_MAX) == 2_500
        assert sock.getsockopt(zmq.HEARTBEAT_IVL) == 750
        assert sock.getsockopt(zmq.HEARTBEAT_TIMEOUT) == 3_000
        assert sock.getsockopt(zmq.BACKLOG) == 512
    finally:
        sock.close(0)
        context.term()


@pytest.mark.parametrize("field", ["linger_s", "reconnect_s", "heartbeat_s", "send_hwm"])
def test_a_negative_option_is_refused_by_name(field: str) -> None:
    with pytest.raises(ValueError, match=f"{field} must be >= 0"):
        SocketOptions(**{field: -1})  # type: ignore[arg-type]
