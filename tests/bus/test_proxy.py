"""Many to many through the XSUB/XPUB proxy: in this process, and as `leyline proxy`."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from bus_loops import ANY_PORT, handshake, pump_until
from bus_samples import fast_signals

from bus import Channel, Envelope, Proxy, Publisher, Subscriber
from bus.security import Curve
from services.stack import free_ports

PER_PUBLISHER = 200


def _many_to_many(
    frontend: str, backend: str, curve: Callable[[str], Curve] | None = None
) -> tuple[list[Publisher], list[Subscriber]]:
    """Two workers publishing, two subscribers; with `curve`, all pin the proxy's key."""

    def security(identity: str) -> Curve | None:
        return None if curve is None else curve(identity)

    if curve is not None:
        frontend, backend = f"proxy@{frontend}", f"proxy@{backend}"
    publishers = [
        Publisher(frontend, f"w{n}", bind=False, security=security(f"w{n}")) for n in (1, 2)
    ]
    subscribers = [
        Subscriber(backend, [(Channel.SIG, None)], security=security(identity))
        for identity in ("sink", "tool")
    ]
    for subscriber in subscribers:
        handshake(subscriber, *publishers)
    return publishers, subscribers


def _publish_and_receive_all(publishers: list[Publisher], subscribers: list[Subscriber]) -> None:
    received: list[list[Envelope]] = [[] for _ in subscribers]
    for subscriber, sink in zip(subscribers, received, strict=True):
        subscriber.on(Channel.SIG, sink.append)
    for epoch in range(PER_PUBLISHER):
        for publisher in publishers:
            publisher.publish(Channel.SIG, fast_signals(epoch % 30), publisher.sender_id)
    total = PER_PUBLISHER * len(publishers)
    assert pump_until(lambda: all(len(r) == total for r in received), *subscribers)
    for subscriber, sink in zip(subscribers, received, strict=True):
        for publisher in publishers:
            sequences = [e.header.sequence for e in sink if e.header.sender == publisher.sender_id]
            assert sequences == list(range(1, PER_PUBLISHER + 1))
        assert subscriber.metrics.rejected_total == 0
        assert subscriber.metrics.gaps == 0


def _close(publishers: list[Publisher], subscribers: list[Subscriber]) -> None:
    for publisher in publishers:
        publisher.close()
    for subscriber in subscribers:
        subscriber.close()


@pytest.fixture
def running_proxy() -> Iterator[Proxy]:
    proxy = Proxy(ANY_PORT, ANY_PORT)
    stop = threading.Event()
    thread = threading.Thread(target=proxy.run, args=(stop.is_set,), daemon=True)
    thread.start()
    yield proxy
    stop.set()
    thread.join(timeout=5)
    proxy.close()


def test_two_publishers_reach_two_subscribers_through_the_proxy(running_proxy: Proxy) -> None:
    publishers, subscribers = _many_to_many(running_proxy.frontend, running_proxy.backend)
    try:
        _publish_and_receive_all(publishers, subscribers)
    finally:
        _close(publishers, subscribers)
    metrics = running_proxy.metrics
    # Every data message went through once, plus Ready and heartbeat control messages.
    assert metrics.messages >= PER_PUBLISHER * len(publishers)
    assert metrics.bytes > metrics.messages * 3
    assert metrics.subscriptions >= 2 * 2  # two prefixes per subscriber (data, control)
    assert metrics.dropped == 0


def _await_listening(address: str, process: subprocess.Popen[bytes], timeout_s: float = 60) -> None:
    """Until something accepts TCP connections at `address` (the process bound it)."""
    host, port = address.removeprefix("tcp://").rsplit(":", 1)
    deadline = time.monotonic() + timeout_s
    while True:
        assert process.poll() is None, "the proxy exited"
        try:
            socket.create_connection((host, int(port)), timeout=1).close()
            return
        except OSError:
            assert time.monotonic() < deadline, f"nothing listens at {address}"
            time.sleep(0.1)


@pytest.mark.slow
def test_leyline_proxy_command_forwards_between_processes(
    key_dir: Path, curve: Callable[[str], Curve]
) -> None:
    frontend, backend = (f"tcp://127.0.0.1:{port}" for port in free_ports(2))
    command = [sys.executable, "-m", "services.cli", "proxy", "--frontend", frontend]
    process = subprocess.Popen(
        [*command, "--backend", backend, "--keys-dir", str(key_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        _await_listening(backend, process)  # starting a process can outlast a handshake
        publishers, subscribers = _many_to_many(frontend, backend, curve)
        try:
            _publish_and_receive_all(publishers, subscribers)
        finally:
            _close(publishers, subscribers)
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=10)
    assert process.returncode == 0, output
    assert b"proxy stopped" in output
