"""Replay bind and advertise addresses: the announced one is reachable, loopback never leaks."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import zmq

from bus import Channel, Publisher, Subscriber
from leyline import ReplayDone, ReplayRequest
from leyline.wire import REGISTRY
from services.addresses import replay_addresses, tcp_host
from services.cli._service import make_node
from services.config import BusConfig, ConfigError, load_config

REMOTE_PEER = "tcp://10.77.0.3:5551"  # never contacted: only parsed and classified


def test_tcp_host_reads_the_host_of_every_endpoint_form() -> None:
    assert tcp_host("tcp://controller:5551") == "controller"
    assert tcp_host("tcp://10.77.0.3:5551") == "10.77.0.3"
    assert tcp_host("controller@tcp://10.77.0.3:5551") == "10.77.0.3"
    assert tcp_host("tcp://[fd00::3]:5551") == "fd00::3"
    assert tcp_host("tcp://10.77.0.2;10.77.0.3:5551") == "10.77.0.3"
    assert tcp_host("ipc:///tmp/leyline") is None


def test_a_node_with_loopback_peers_binds_and_advertises_loopback() -> None:
    assert replay_addresses(BusConfig(), ["tcp://127.0.0.1:5551"]) == (
        "tcp://127.0.0.1:*",
        "127.0.0.1",
    )


def test_a_node_without_peers_keeps_its_replay_endpoint_on_loopback() -> None:
    assert replay_addresses(BusConfig(), []) == ("tcp://127.0.0.1:*", "127.0.0.1")


def test_an_advertised_name_binds_every_interface_unless_told() -> None:
    assert replay_addresses(BusConfig(replay_advertise="worker-1"), [REMOTE_PEER]) == (
        "tcp://0.0.0.0:*",
        "worker-1",
    )
    bus = BusConfig(replay_advertise="worker-1", replay_bind="10.77.0.4")
    assert replay_addresses(bus, [REMOTE_PEER]) == ("tcp://10.77.0.4:*", "worker-1")


@pytest.mark.parametrize("advertise", ["127.0.0.1", "localhost", "::1", "[::1]"])
def test_advertising_loopback_to_a_remote_peer_is_refused_at_start_up(
    advertise: str, tmp_path: Path
) -> None:
    bus = load_config(BusConfig, "bus", env={"LEYLINE_BUS_REPLAY_ADVERTISE": advertise})
    with pytest.raises(ConfigError, match=r"bus\.replay_advertise = .*loopback.*10\.77\.0\.3"):
        make_node("w1", bus, subscribe=[], publish_connect=[REMOTE_PEER], state_dir=tmp_path)


def test_replay_settings_are_read_from_the_environment() -> None:
    env = {"LEYLINE_BUS_REPLAY_BIND": "0.0.0.0", "LEYLINE_BUS_REPLAY_ADVERTISE": "worker-1"}
    bus = load_config(BusConfig, "bus", env=env)
    assert (bus.replay_bind, bus.replay_advertise) == ("0.0.0.0", "worker-1")
    with pytest.raises(ConfigError, match=r"bus\.replay_advertise"):
        load_config(BusConfig, "bus", env={"LEYLINE_BUS_REPLAY_ADVERTISE": "tcp://w1:5"})


def test_a_window_bound_on_every_interface_announces_and_answers_its_advertised_address() -> None:
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    publisher = Publisher(
        None,
        "w1",
        context=context,
        replay_window=8,
        replay_address="tcp://0.0.0.0:*",
        replay_advertise="127.0.0.1",
    )
    subscriber = Subscriber([], [(Channel.TEL, None)], context=context)
    subscriber.attach(publisher.attach("inproc://advertise", bind=True), bind=False)
    requester = context.socket(zmq.DEALER)  # what the sink's replay client does, by hand
    requester.setsockopt(zmq.LINGER, 0)
    try:
        deadline = time.monotonic() + 5
        while "w1" not in subscriber.replay_endpoints and time.monotonic() < deadline:
            publisher.service()
            publisher.heartbeat()
            subscriber.poll(0.01)
        endpoint = subscriber.replay_endpoints["w1"]
        assert endpoint.startswith("tcp://127.0.0.1:") and not endpoint.endswith(":*")
        requester.connect(endpoint)
        request = ReplayRequest(topic="tel.w1.", incarnation=publisher.incarnation, first=1, last=1)
        requester.send(REGISTRY.encoder().encode(request))
        deadline = time.monotonic() + 5
        while not requester.poll(10) and time.monotonic() < deadline:
            publisher.service()
        done = subscriber.replayed(requester.recv_multipart())
        assert done is not None and isinstance(done.message, ReplayDone)
    finally:
        requester.close()
        subscriber.close()
        publisher.close()
        context.term()
