"""ZAP off the service's GIL (bus/zap.py): handshakes while the server is busy, keys added and
removed at runtime, verdicts counted, and the helper process gone with its service.

Real tcp sockets, real helper processes. The forged-identity case (a trusted key claiming
another identity in its headers) is tests/bus/test_curve.py's forged-sender test, which goes
through this ZAP handler too.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import structlog
import zmq
from bus_loops import ANY_PORT, DEADLINE_S, pump_until
from zmq.utils.monitor import recv_monitor_message

from bus import Channel, Publisher, Subscriber
from bus.security import (
    Curve,
    Role,
    TrustStore,
    ensure_keys,
    generate_key,
    load_key_pair,
    secret_key_path,
    trust_dir,
)
from leyline import RejectReason

CurveOf = Callable[[str], Curve]
Context = zmq.Context[zmq.Socket[bytes]]
#: Concurrent handshakes, as many as a few hundred workers connecting at one epoch's start.
CLIENTS = 256
#: The server's handshake limit, which every client's ZAP answer must beat.
HANDSHAKE_S = 5.0
#: Threads of the server's process busy in Python besides the main one (a service has a
#: loop, a publisher thread, a metrics server...).
SPINNERS = 4
_OUTCOMES = (
    zmq.EVENT_HANDSHAKE_SUCCEEDED
    | zmq.EVENT_HANDSHAKE_FAILED_AUTH
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
)


@pytest.fixture
def contexts() -> Iterator[tuple[Context, Context]]:
    """A server context and a client context (its own I/O thread), torn down in order."""
    server: Context = zmq.Context()
    client: Context = zmq.Context()
    yield server, client
    client.destroy(linger=0)
    Curve.stop_handlers(server)
    server.destroy(linger=0)


def _server(context: Context, curve: Curve) -> tuple[zmq.Socket[bytes], str, zmq.Socket[bytes]]:
    """A CURVE ROUTER on loopback, its address and a monitor of its handshakes."""
    server = context.socket(zmq.ROUTER)
    server.setsockopt(zmq.LINGER, 0)
    curve.serve(server)
    server.setsockopt(zmq.HANDSHAKE_IVL, int(HANDSHAKE_S * 1000))
    port = server.bind_to_random_port("tcp://127.0.0.1")
    return server, f"tcp://127.0.0.1:{port}", server.get_monitor_socket(_OUTCOMES)


def _client(context: Context, curve: Curve, address: str) -> zmq.Socket[bytes]:
    client = context.socket(zmq.DEALER)
    client.setsockopt(zmq.LINGER, 0)
    curve.pin(client, "sink")
    client.connect(address)
    return client


def _spin() -> None:
    """A round of pure-Python work: the GIL held but for the interpreter's switch interval."""
    total = 0
    for value in range(200_000):
        total += value * value


def _busy_until_handshaken(events: zmq.Socket[bytes], wanted: int) -> tuple[int, int]:
    """Keep `SPINNERS` threads and this one busy in Python, reading handshake outcomes between
    rounds, until `wanted` succeeded or the deadline passed; returns (succeeded, failed)."""
    stop = threading.Event()

    def spinner() -> None:
        while not stop.is_set():
            _spin()

    threads = [threading.Thread(target=spinner) for _ in range(SPINNERS)]
    for thread in threads:
        thread.start()
    succeeded = failed = 0
    deadline = time.monotonic() + 3 * HANDSHAKE_S
    try:
        while succeeded < wanted and time.monotonic() < deadline:
            _spin()
            while int(events.getsockopt(zmq.EVENTS)) & zmq.POLLIN:
                event = recv_monitor_message(events, zmq.NOBLOCK)["event"]
                if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                    succeeded += 1
                else:
                    failed += 1
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    return succeeded, failed


def test_hundreds_of_handshakes_complete_while_the_server_holds_the_gil(
    contexts: tuple[Context, Context], curve: CurveOf
) -> None:
    """pyzmq's ThreadAuthenticator needs the GIL for every ZAP request: against it (main at
    44f223c) handshakes time out and are retried (213 failed on the way to 256)."""
    server_context, client_context = contexts
    server, address, events = _server(server_context, curve("sink"))
    worker = curve("w1")
    clients = [_client(client_context, worker, address) for _ in range(CLIENTS)]
    succeeded, failed = _busy_until_handshaken(events, CLIENTS)
    assert (succeeded, failed) == (CLIENTS, 0)
    for client in clients:
        client.close()
    events.close()
    server.close()


def _verdicts(curve: Curve) -> tuple[float, float]:
    found = {name: value for name, _, value in curve.samples()}
    return found["leyline_auth_accepted_total"], found["leyline_auth_denied_total"]


def _attempt(context: Context, curve: Curve, address: str) -> tuple[int, zmq.Socket[bytes]]:
    """Connect once; the first handshake outcome the client sees, and the client."""
    client = context.socket(zmq.DEALER)
    client.setsockopt(zmq.LINGER, 0)
    curve.pin(client, "sink")
    events = client.get_monitor_socket(_OUTCOMES)
    client.connect(address)
    outcome = -1
    if events.poll(int(DEADLINE_S * 1000)):
        outcome = recv_monitor_message(events)["event"]
    client.disable_monitor()
    events.close()
    return outcome, client


def test_a_key_added_at_runtime_is_let_in_and_a_removed_one_refused(
    contexts: tuple[Context, Context], tmp_path: Path
) -> None:
    server_context, client_context = contexts
    ensure_keys(tmp_path / "bus", {"sink": Role.SINK})
    sink = Curve.from_directory(tmp_path / "bus", "sink")
    server, address, events = _server(server_context, sink)
    late = generate_key(tmp_path / "late", "w3", Role.WORKER)  # not (yet) trusted by the bus
    w3 = Curve(late, TrustStore(trust_dir(tmp_path / "bus")))
    certificate = trust_dir(tmp_path / "bus") / "w3.key"
    accepted, denied = _verdicts(sink)

    outcome, stranger = _attempt(client_context, w3, address)
    assert outcome == zmq.EVENT_HANDSHAKE_FAILED_AUTH
    stranger.close()
    assert _verdicts(sink)[1] > denied

    shutil.copy(trust_dir(tmp_path / "late") / "w3.key", certificate)
    outcome, trusted = _attempt(client_context, w3, address)
    assert outcome == zmq.EVENT_HANDSHAKE_SUCCEEDED
    trusted.send(b"hello")
    assert server.poll(int(DEADLINE_S * 1000))
    _, body = server.recv_multipart(copy=False)
    assert body.get("User-Id") == "w3"  # the accepted key's identity, from ZAP
    assert _verdicts(sink)[0] == accepted + 1
    trusted.close()

    denied = _verdicts(sink)[1]
    certificate.unlink()
    outcome, removed = _attempt(client_context, w3, address)
    assert outcome == zmq.EVENT_HANDSHAKE_FAILED_AUTH
    removed.close()
    assert _verdicts(sink)[1] > denied
    events.close()
    server.close()


def test_a_publisher_counts_and_logs_a_refused_handshake(
    context: Context, curve: CurveOf, key_dir: Path, impostor_dir: Path
) -> None:
    controller = Publisher(ANY_PORT, "controller", context=context, security=curve("controller"))
    stranger = Curve(
        load_key_pair(secret_key_path(impostor_dir, "w1")), TrustStore(trust_dir(key_dir))
    )
    with structlog.testing.capture_logs() as logs:
        listener = Subscriber(
            f"controller@{controller.address}",
            [(Channel.CMD, "w1")],
            context=context,
            security=stranger,
        )
        assert pump_until(
            lambda: controller.metrics.refused[RejectReason.UNAUTHENTICATED] >= 1,
            publishers=(controller,),
        )
    refused = [entry for entry in logs if entry["event"] == "handshake refused"]
    assert refused and refused[0]["reason"] == RejectReason.UNAUTHENTICATED.name
    listener.close()
    controller.close()


_SERVE_AND_REPORT = textwrap.dedent(
    """
    import sys, zmq
    from bus.security import Curve
    context = zmq.Context()
    server = context.socket(zmq.ROUTER)
    relay = Curve.from_directory(sys.argv[1], "sink").authenticator(context)
    print(relay.helper.process.pid, relay.helper.directory, flush=True)
    if sys.argv[2] == "close":
        Curve.stop_handlers(context)
        print("closed", flush=True)
    sys.stdin.read()
    """
)


def _serving_child(key_dir: Path, how: str) -> tuple[subprocess.Popen[str], int, Path]:
    """A Python process with a CURVE server: it, its helper's pid and its helper's directory."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    child = subprocess.Popen(
        [sys.executable, "-c", _SERVE_AND_REPORT, str(key_dir), how],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert child.stdout is not None
    pid, directory = child.stdout.readline().split()
    if how == "close":
        assert child.stdout.readline().strip() == "closed"
    return child, int(pid), Path(directory)


def _running(pid: int) -> bool:
    """Whether `pid` still runs (a zombie nobody reaped does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


def _gone(pid: int, directory: Path) -> bool:
    deadline = time.monotonic() + DEADLINE_S
    while _running(pid) or directory.exists():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@pytest.mark.parametrize("how", ["close", "kill"])
def test_the_helper_goes_with_its_service(key_dir: Path, how: str) -> None:
    """Closed: gone at once, files and all. The service killed: the helper sees its pipe end
    and goes too, no orphan left behind."""
    child, pid, directory = _serving_child(key_dir, how)
    try:
        if how == "close":
            assert not _running(pid) and not directory.exists()
        else:
            assert _running(pid)
            child.send_signal(signal.SIGKILL)
            assert _gone(pid, directory)
    finally:
        child.kill()
        child.wait()


def test_the_helper_of_a_finished_service_is_gone(key_dir: Path) -> None:
    """A service that ends without closing anything: the helper is stopped at exit."""
    child, pid, directory = _serving_child(key_dir, "exit")
    assert child.stdin is not None
    child.stdin.close()  # the child's read returns, and it exits normally
    assert child.wait(DEADLINE_S) == 0
    assert _gone(pid, directory)
