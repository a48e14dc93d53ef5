"""Multi-host fixtures: a namespace network per test, skipped where namespaces are not allowed."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from host_stack import HOSTS, PROXY_HOSTS, HostStack

from services.chaos.netns import Network, network, unavailable

#: Creating a namespace needs root (or CAP_SYS_ADMIN) and iproute2; probed once, when needed.
_unavailable = functools.cache(unavailable)


@pytest.fixture
def netns() -> None:
    """Skips the test, saying why, where this machine cannot build namespace networks."""
    reason = _unavailable()
    if reason is not None:
        pytest.skip(f"network namespaces unavailable: {reason}")


@pytest.fixture
def hosts(netns: None) -> Iterator[Network]:
    """The hosts of `HOSTS` on one switch, removed after the test however it ends."""
    with network(HOSTS) as built:
        yield built


@pytest.fixture
def host_stack(hosts: Network, tmp_path: Path) -> Iterator[Callable[[int], HostStack]]:
    """Plans the stack on `hosts` for a number of epochs; its logs are closed afterwards."""
    stacks: list[HostStack] = []

    def plan(epochs: int) -> HostStack:
        stacks.append(HostStack(hosts, tmp_path, epochs))
        return stacks[-1]

    yield plan
    for stack in stacks:
        stack.close()


@pytest.fixture
def proxy_hosts(netns: None) -> Iterator[Network]:
    """The hosts of `PROXY_HOSTS`: a sink, a controller, a proxy and two worker hosts."""
    with network(PROXY_HOSTS) as built:
        yield built
