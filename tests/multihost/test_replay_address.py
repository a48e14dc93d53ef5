"""Replay addresses on real hosts: the default is the host's own subnet address, and a node
that would announce loopback to a remote peer refuses to start."""

from __future__ import annotations

import os
import sys

import pytest
from host_stack import ROOT, SINK_PORT

from services.chaos.netns import Network
from services.config import ENV_PREFIX

pytestmark = pytest.mark.multihost

_FIND = (
    "from services.addresses import replay_addresses; from services.config import BusConfig;"
    "print(*replay_addresses(BusConfig(), ['tcp://{peer}:{port}']))"
)


def _env(settings: dict[str, str]) -> dict[str, str]:
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
    return {**inherited, "PYTHONPATH": str(ROOT), **settings}


def test_a_node_advertises_the_address_that_routes_to_its_first_peer(hosts: Network) -> None:
    worker, sink = hosts["w1"], hosts["sink"]
    script = _FIND.format(peer=sink.address, port=SINK_PORT)
    done = worker.run([sys.executable, "-c", script], env=_env({}))
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [f"tcp://{worker.address}:*", worker.address]


def test_a_controller_announcing_loopback_to_a_remote_sink_refuses_to_start(
    hosts: Network,
) -> None:
    settings = {
        "LEYLINE_CONTROLLER_SINK": f"tcp://{hosts['sink'].address}:{SINK_PORT}",
        "LEYLINE_BUS_REPLAY_ADVERTISE": "127.0.0.1",
    }
    command = [sys.executable, "-m", "services.cli", "controller"]
    done = hosts["controller"].run(command, env=_env(settings), timeout_s=60.0)
    assert done.returncode == 2
    assert "bus.replay_advertise = 127.0.0.1: a loopback address" in done.stderr
    assert hosts["sink"].address in done.stderr
