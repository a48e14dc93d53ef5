"""The ports a stack is given: free, distinct, and never ones an outgoing connection can take."""

from __future__ import annotations

import socket
from pathlib import Path

from services.stack import free_ports


def _first_ephemeral_port() -> int:
    return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])


def test_the_ports_are_distinct_free_and_below_the_ephemeral_range() -> None:
    ports = free_ports(8)
    assert len(set(ports)) == 8
    assert all(1024 < port < _first_ephemeral_port() for port in ports)
    for port in ports:
        with socket.socket() as service:
            service.bind(("127.0.0.1", port))


def test_a_port_the_kernel_gives_an_outgoing_connection_is_never_handed_out() -> None:
    """The race the range closes: a client's local port is the kernel's choice, and it is
    taken from the ephemeral range, where `free_ports` never looks."""
    with socket.socket() as server, socket.socket() as client:
        server.bind(("127.0.0.1", 0))
        server.listen()
        client.connect(server.getsockname())
        local_port = client.getsockname()[1]
        assert local_port >= _first_ephemeral_port()
        for _ in range(20):
            assert local_port not in free_ports(4)


def test_a_port_already_bound_is_not_handed_out() -> None:
    ports = free_ports(2)
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", ports[0]))
        for _ in range(50):
            assert ports[0] not in free_ports(4)
