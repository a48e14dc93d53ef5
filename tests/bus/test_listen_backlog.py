"""Every socket Leyline binds queues a crowd of connections, not libzmq's default 100.

The serving process is stopped (SIGSTOP) while more peers than libzmq's default backlog
connect: its I/O thread accepts nothing, so the kernel's accept queue, as long as the socket's
listen backlog, is all that holds them. A connection past it has its SYN dropped and waits
for a retransmission (1, 3, 7 s later): the "bands" a 1,024-worker start fell into.
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator

import pytest
from bus_loops import DEADLINE_S

#: More peers than libzmq's default backlog (100) at once, well within the factory's.
PEERS = 300
_SERVING = textwrap.dedent(
    """
    import json, sys
    from bus import Channel, Publisher, Subscriber
    from bus.proxy import Proxy
    any_port = "tcp://127.0.0.1:*"
    publisher = Publisher(any_port, "w1", replay_window=8, background=False)
    subscriber = Subscriber(any_port, [(Channel.TEL, None)], bind=True)
    proxy = Proxy(any_port, any_port)
    print(json.dumps({
        "publisher": publisher.address,
        "replay server": publisher.replay_endpoint,
        "subscriber": subscriber.addresses[0],
        "proxy frontend": proxy.frontend,
        "proxy backend": proxy.backend,
    }), flush=True)
    sys.stdin.read()
    """
)


@pytest.fixture(scope="module")
def serving() -> Iterator[tuple[subprocess.Popen[str], dict[str, str]]]:
    """A process with one socket of every kind Leyline binds, and their endpoints."""
    process = subprocess.Popen(
        [sys.executable, "-c", _SERVING],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert process.stdout is not None and process.stdin is not None
    endpoints = json.loads(process.stdout.readline())
    yield process, endpoints
    process.send_signal(signal.SIGCONT)
    process.stdin.close()
    process.wait(timeout=DEADLINE_S)


def _connected(endpoint: str, peers: int) -> int:
    """Open `peers` TCP connections to `endpoint` at once; how many the kernel completed
    before the deadline (a dropped SYN is retried no sooner than a second later)."""
    host, port = endpoint.removeprefix("tcp://").rsplit(":", 1)
    pending: list[socket.socket] = []
    done: list[socket.socket] = []
    for _ in range(peers):
        sock = socket.socket()
        sock.setblocking(False)
        sock.connect_ex((host, int(port)))
        pending.append(sock)
    deadline = time.monotonic() + DEADLINE_S
    while pending and time.monotonic() < deadline:
        _, writable, _ = select.select([], pending, [], 0.1)
        for sock in writable:
            pending.remove(sock)
            if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
                done.append(sock)
    for sock in pending + done:
        sock.close()
    return len(done)


@pytest.mark.parametrize(
    "kind", ["publisher", "replay server", "subscriber", "proxy frontend", "proxy backend"]
)
def test_a_bound_socket_queues_more_peers_than_libzmqs_default_backlog(
    serving: tuple[subprocess.Popen[str], dict[str, str]], kind: str
) -> None:
    """A replay server was bound outside the socket factory, with libzmq's backlog of 100:
    199 of 300 peers connecting while its process was busy were left waiting."""
    process, endpoints = serving
    process.send_signal(signal.SIGSTOP)
    try:
        assert _connected(endpoints[kind], PEERS) == PEERS
    finally:
        process.send_signal(signal.SIGCONT)
