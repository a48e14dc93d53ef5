"""Hosts as Linux network namespaces: a small private network a run builds and removes.

The multi-host tests (tests/multihost) and `leyline chaos --namespaces` (whose partition
faults cut a host's cable) share it. It needs root (or CAP_SYS_ADMIN) and iproute2.

Topology: one namespace per host, each with one `eth0` on the test subnet, all joined to a
bridge `br0` living in a namespace of its own (the "switch"). Nothing is added to the
machine's own namespace, so the test subnet is reachable only from inside the network, and
two networks (parallel runs) never see each other even on the same subnet.

Cutting a host unplugs its cable at the switch (the bridge port goes down): the host keeps its
address and routes, its packets simply stop arriving, as in a real partition.

Namespace names carry the creating process id; a network whose creator is gone (a killed
run) is removed by the next one.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import signal
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO

from leyline import LeylineError

#: Every namespace this module creates starts with this.
PREFIX = "llmh-"
SUBNET = "10.77.0"
PREFIX_LENGTH = 24
_BRIDGE = "br0"
_NAME = re.compile(rf"^{re.escape(PREFIX)}(\d+)-")
_networks = itertools.count(1)


class NetnsError(LeylineError, RuntimeError):
    """An `ip` command failed; the message carries its stderr."""


def ip(*args: str, namespace: str | None = None) -> str:
    """Run `ip [-n namespace] args...`; its stdout, or `NetnsError` with its stderr."""
    argv = ["ip", *(("-n", namespace) if namespace else ()), *args]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise NetnsError(f"{' '.join(argv)}: {done.stderr.strip()}")
    return done.stdout


def unavailable() -> str | None:
    """Why this machine cannot build namespace networks, or None when it can."""
    probe = f"{PREFIX}{os.getpid()}-probe"
    try:
        ip("netns", "add", probe)
    except FileNotFoundError:
        return "iproute2 (`ip`) is not installed"
    except NetnsError as error:
        return f"`ip netns add` is not permitted here ({error})"
    ip("netns", "del", probe)
    return None


def _kill_members(namespace: str) -> None:
    """SIGKILL what still runs inside `namespace` (only this module's networks get here)."""
    try:
        pids = ip("netns", "pids", namespace).split()
    except NetnsError:
        return
    for pid in pids:
        with suppress(ProcessLookupError):
            os.kill(int(pid), signal.SIGKILL)


def _delete(namespace: str) -> None:
    _kill_members(namespace)
    with suppress(NetnsError):  # already gone
        ip("netns", "del", namespace)


def remove_stale() -> list[str]:
    """Delete the namespaces left by runs whose process is gone; their names."""
    stale = []
    for line in ip("netns", "list").splitlines():
        name = line.split()[0] if line.strip() else ""
        found = _NAME.match(name)
        if found is None:
            continue
        try:
            os.kill(int(found.group(1)), 0)
        except ProcessLookupError:
            _delete(name)
            stale.append(name)
        except PermissionError:
            pass  # alive, someone else's
    return stale


class Host:
    """One host of a network: its namespace, its address, its cable to the switch."""

    def __init__(self, network: Network, name: str, namespace: str, port: str) -> None:
        self.network = network
        self.name = name
        self.namespace = namespace
        self._port = port
        self._address: str | None = None

    @property
    def address(self) -> str:
        """This host's IPv4 address on the test subnet, as its namespace reports it."""
        if self._address is None:
            (link,) = json.loads(
                ip("-j", "-4", "addr", "show", "dev", "eth0", namespace=self.namespace)
            )
            self._address = str(link["addr_info"][0]["local"])
        return self._address

    def argv(self, command: Sequence[str]) -> list[str]:
        """`command` as run inside this host."""
        return ["ip", "netns", "exec", self.namespace, *command]

    def spawn(
        self,
        command: Sequence[str],
        env: Mapping[str, str] | None = None,
        log: IO[bytes] | None = None,
        cwd: Path | None = None,
    ) -> subprocess.Popen[bytes]:
        """Start `command` inside this host; the network stops it when it is removed."""
        process = subprocess.Popen(
            self.argv(command),
            env=None if env is None else dict(env),
            cwd=cwd,
            stdout=log,
            stderr=subprocess.STDOUT if log is not None else None,
        )
        self.network.processes.append(process)
        return process

    def run(
        self,
        command: Sequence[str],
        env: Mapping[str, str] | None = None,
        timeout_s: float = 30.0,
    ) -> subprocess.CompletedProcess[str]:
        """Run `command` inside this host to its end; its output as text."""
        return subprocess.run(
            self.argv(command),
            env=None if env is None else dict(env),
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )

    def cut(self) -> None:
        """Unplug this host from the switch: nothing it sends arrives, nothing reaches it."""
        ip("link", "set", self._port, "down", namespace=self.network.switch)

    def heal(self) -> None:
        """Plug the cable back in."""
        ip("link", "set", self._port, "up", namespace=self.network.switch)


class Network:
    """Hosts on one switch; `remove()` stops their processes and deletes every namespace."""

    def __init__(self, names: Sequence[str], subnet: str = SUBNET) -> None:
        if len(set(names)) != len(names) or not 0 < len(names) < 250:
            raise ValueError(f"host names must be distinct, 1 to 249 of them: {names}")
        remove_stale()
        base = f"{PREFIX}{os.getpid()}-{next(_networks)}"
        self.switch = f"{base}-switch"
        self.hosts: dict[str, Host] = {}
        self.processes: list[subprocess.Popen[bytes]] = []
        self._namespaces: list[str] = []
        try:
            self._add_namespace(self.switch)
            ip("link", "add", _BRIDGE, "type", "bridge", namespace=self.switch)
            ip("link", "set", _BRIDGE, "up", namespace=self.switch)
            for index, name in enumerate(names, start=2):
                self._add_host(name, f"{base}-{name}", f"{subnet}.{index}")
        except BaseException:
            self.remove()
            raise

    def __getitem__(self, name: str) -> Host:
        return self.hosts[name]

    def _add_namespace(self, namespace: str) -> None:
        ip("netns", "add", namespace)
        self._namespaces.append(namespace)
        ip("link", "set", "lo", "up", namespace=namespace)

    def _add_host(self, name: str, namespace: str, address: str) -> None:
        self._add_namespace(namespace)
        port = f"p{len(self.hosts)}"  # unique in the switch namespace, under 16 bytes
        ip(
            "link", "add", "eth0", "netns", namespace,
            "type", "veth", "peer", "name", port, "netns", self.switch,
        )  # fmt: skip
        ip("link", "set", port, "master", _BRIDGE, "up", namespace=self.switch)
        ip("addr", "add", f"{address}/{PREFIX_LENGTH}", "dev", "eth0", namespace=namespace)
        ip("link", "set", "eth0", "up", namespace=namespace)
        self.hosts[name] = Host(self, name, namespace, port)

    def remove(self, timeout_s: float = 10.0) -> None:
        """SIGTERM every process started in the network, SIGKILL the slow, delete it all."""
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for namespace in reversed(self._namespaces):
            _delete(namespace)
        self._namespaces.clear()


@contextmanager
def network(names: Sequence[str], subnet: str = SUBNET) -> Iterator[Network]:
    """A network of `names` hosts for the block, removed however the block ends."""
    built = Network(names, subnet)
    try:
        yield built
    finally:
        built.remove()
