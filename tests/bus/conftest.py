"""Fixtures: an in-process bus per test, and tcp endpoints on free loopback ports."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import zmq

from bus.testing import InProcessBus


@pytest.fixture
def inproc() -> Iterator[InProcessBus]:
    with InProcessBus() as bus:
        yield bus


@pytest.fixture
def context() -> Iterator[zmq.Context[zmq.Socket[bytes]]]:
    """A private context for tcp tests, terminated (sockets closed) at the end."""
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    yield ctx
    ctx.destroy(linger=0)
