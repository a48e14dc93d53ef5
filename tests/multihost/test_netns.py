"""The namespace network itself: hosts reach each other, a cut host is unreachable until healed,
and nothing is left behind."""

from __future__ import annotations

import subprocess
import sys

import pytest

from services.chaos.netns import PREFIX, Network, ip, network

pytestmark = pytest.mark.multihost

_ECHO_PORT = 7000
#: A TCP echo of one line on the test subnet; exits after one connection.
_SERVER = (
    "import socket;s=socket.create_server(('{address}', {port}));c,_=s.accept();"
    "c.sendall(c.recv(64))"
)
_CLIENT = (
    "import socket;c=socket.create_connection(('{address}', {port}), timeout={timeout});"
    "c.sendall(b'ping');print(c.recv(64).decode())"
)


def _namespaces() -> set[str]:
    return {line.split()[0] for line in ip("netns", "list").splitlines() if line.strip()}


def _echo(net: Network, server: str, client: str, timeout_s: float) -> str:
    address = net[server].address
    process = net[server].spawn(
        [sys.executable, "-c", _SERVER.format(address=address, port=_ECHO_PORT)]
    )
    try:
        code = _CLIENT.format(address=address, port=_ECHO_PORT, timeout=timeout_s)
        for _ in range(50):  # the server may not be listening yet
            done = net[client].run([sys.executable, "-c", code], timeout_s=timeout_s + 5)
            if "ConnectionRefused" not in done.stderr:
                return done.stdout.strip() or done.stderr.strip().splitlines()[-1]
        return "refused"
    finally:
        process.kill()
        process.wait()


def test_hosts_get_distinct_addresses_on_the_test_subnet(hosts: Network) -> None:
    addresses = [host.address for host in hosts.hosts.values()]
    assert len(set(addresses)) == len(addresses)
    assert all(address.startswith("10.77.0.") for address in addresses)


def test_a_host_reaches_another_and_a_cut_host_is_unreachable_until_healed(
    hosts: Network,
) -> None:
    assert _echo(hosts, "sink", "w1", timeout_s=5.0) == "ping"
    hosts["sink"].cut()
    assert "timed out" in _echo(hosts, "sink", "w1", timeout_s=1.0)
    hosts["sink"].heal()
    assert _echo(hosts, "sink", "w1", timeout_s=5.0) == "ping"


def test_a_network_is_removed_with_its_processes_even_when_the_block_fails(netns: None) -> None:
    before = _namespaces()
    with pytest.raises(RuntimeError, match="the test failed"), network(["a", "b"]) as net:
        sleeper = net["a"].spawn([sys.executable, "-c", "import time; time.sleep(60)"])
        assert {h.namespace for h in net.hosts.values()} <= _namespaces()
        raise RuntimeError("the test failed")
    assert sleeper.poll() is not None
    assert _namespaces() == before
    assert not any(name.startswith(PREFIX) for name in _namespaces() - before)


def test_a_killed_runs_namespaces_are_removed_by_the_next_run(netns: None) -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    stale = f"{PREFIX}{gone.pid}-1-switch"
    ip("netns", "add", stale)
    with network(["a"]):
        assert stale not in _namespaces()
