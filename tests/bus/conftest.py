"""Fixtures: an in-process bus per test, tcp contexts, and CURVE key directories."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import zmq

from bus.security import Curve, Role, ensure_keys
from bus.testing import InProcessBus

#: The identities of the CURVE tests' trust directory.
IDENTITIES = {
    "controller": Role.CONTROLLER,
    "sink": Role.SINK,
    "tool": Role.TOOL,
    "proxy": Role.PROXY,
    "w1": Role.WORKER,
    "w2": Role.WORKER,
    # Hostile insiders (tests/bus/test_hostile_input.py): trusted keys that send garbage.
    "evil": Role.WORKER,
    "evil2": Role.WORKER,
    "rogue": Role.CONTROLLER,
}


@pytest.fixture
def inproc() -> Iterator[InProcessBus]:
    with InProcessBus() as bus:
        yield bus


@pytest.fixture
def context() -> Iterator[zmq.Context[zmq.Socket[bytes]]]:
    """A private context for tcp tests, terminated (sockets closed) at the end."""
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    yield ctx
    Curve.stop_handlers(ctx)
    ctx.destroy(linger=0)


@pytest.fixture(scope="session")
def key_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A key directory trusting every identity of `IDENTITIES`."""
    directory = tmp_path_factory.mktemp("keys")
    ensure_keys(directory, IDENTITIES)
    return directory


@pytest.fixture(scope="session")
def impostor_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Keys nobody trusts, under the same identities (an impostor's own trust directory)."""
    directory = tmp_path_factory.mktemp("impostor-keys")
    ensure_keys(directory, IDENTITIES)
    return directory


@pytest.fixture
def curve(key_dir: Path) -> Callable[[str], Curve]:
    """`curve("w1")`: w1's key pair with the shared trust directory."""
    return lambda identity: Curve.from_directory(key_dir, identity)
