"""Which replay address a node binds and which it tells its peers: one they can reach.

A replay endpoint is announced in every heartbeat, and the sink connects to it to refill a
gap. Announcing 127.0.0.1 works while every peer shares the loopback interface and silently
breaks replay across hosts, so the default is the address of the interface that routes to
the node's first peer, and announcing a loopback address to a remote peer is a start-up error.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Sequence

from services.config import BusConfig, ConfigError

#: Bind every IPv4 interface when the advertised host is a name this node cannot bind.
ALL_INTERFACES = "0.0.0.0"
_LOOPBACK = "127.0.0.1"


def tcp_host(endpoint: str) -> str | None:
    """The host of a `tcp://host:port` endpoint (brackets dropped), None for ipc or inproc.

    A leading `identity@` (the key a connect address pins) is not part of the endpoint.
    """
    scheme, _, _ = endpoint.partition("://")
    if "@" in scheme:
        endpoint = endpoint.split("@", 1)[1]
    if not endpoint.startswith("tcp://"):
        return None
    host = endpoint[len("tcp://") :].rsplit(":", 1)[0]
    host = host.rsplit(";", 1)[-1]  # a ZeroMQ `source;peer` pair: the peer is what counts
    return host.removeprefix("[").removesuffix("]")


def is_loopback(host: str) -> bool:
    """True when `host` is, or resolves only to, a loopback address; unresolvable is not."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        found = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except OSError:
        return False
    return bool(found) and all(ipaddress.ip_address(info[4][0]).is_loopback for info in found)


def route_source(host: str) -> str:
    """The local address the kernel would send from to reach `host` (nothing is sent).

    A UDP socket's connect() only picks the route and the source address.
    """
    info = socket.getaddrinfo(host, 9, type=socket.SOCK_DGRAM)[0]
    with socket.socket(info[0], socket.SOCK_DGRAM) as probe:
        probe.connect(info[4])
        return str(probe.getsockname()[0])


def _bare(host: str | None) -> str | None:
    return None if host is None else host.removeprefix("[").removesuffix("]")


def _in_endpoint(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def replay_addresses(bus: BusConfig, peers: Sequence[str]) -> tuple[str, str]:
    """The replay endpoint to bind and the host to advertise, for a node connecting to `peers`.

    Raises `ConfigError` when no address can be found, or when the advertised one is a
    loopback address while a peer is remote.
    """
    hosts = [host for host in map(tcp_host, peers) if host is not None]
    advertise, given_bind = (_bare(host) for host in (bus.replay_advertise, bus.replay_bind))
    if advertise is None:
        if hosts:
            try:
                advertise = route_source(hosts[0])
            except OSError as error:
                raise ConfigError(
                    f"invalid config: bus.replay_advertise: no route to peer {hosts[0]} to find "
                    f"this host's address ({error.strerror or error}); set it"
                ) from None
        elif given_bind in (None, ALL_INTERFACES):
            advertise = _LOOPBACK  # no peer to ask: the local stack's loopback
        else:
            advertise = given_bind
        bind = given_bind or advertise
    else:
        bind = given_bind or ALL_INTERFACES
    if is_loopback(advertise):
        remote = next((host for host in hosts if not is_loopback(host)), None)
        if remote is not None:
            raise ConfigError(
                f"invalid config: bus.replay_advertise = {advertise}: a loopback address, but "
                f"peer {remote} is remote and could never replay from it; set "
                "bus.replay_advertise to an address of this host that the peers reach"
            )
    return f"tcp://{_in_endpoint(bind)}:*", _in_endpoint(advertise)
