"""The stack with each service under the fault injector's hand: start, kill, pause, and (on
namespace hosts) partition."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

from services.chaos.netns import Host
from services.stack import Stack, StackPlan, spawn_service

#: Services that are not workers.
INFRASTRUCTURE = ("sink", "controller")


class ChaosStack(Stack):
    """A `Stack` whose services start one at a time and can be killed, paused and restarted.

    A restarted service runs the same command with the same environment as the first time,
    so it finds its journal, checkpoint or database where it left them; its log is appended.
    With `hosts` (service -> its namespace host) each service runs on its host, whose cable
    `cut` unplugs and `heal` plugs back in.
    """

    def __init__(
        self,
        plan: StackPlan,
        env: Mapping[str, Mapping[str, str]] | None = None,
        hosts: Mapping[str, Host] | None = None,
    ) -> None:
        super().__init__(plan)
        self.hosts = dict(hosts or {})
        self._commands = {name: (command, dict(base)) for name, command, base in plan.services}
        for name, extra in (env or {}).items():
            self._commands[name][1].update(extra)
        self.starts: dict[str, int] = dict.fromkeys(self._commands, 0)
        #: Wall-clock time each service was last launched, to tell this incarnation's files.
        self.launched_at: dict[str, float] = {}

    @property
    def names(self) -> list[str]:
        return list(self._commands)

    @property
    def worker_names(self) -> list[str]:
        return [name for name, (command, _) in self._commands.items() if command == "worker"]

    def start(self, names: Iterable[str] | None = None) -> None:
        """Start `names` (every service by default) in the order given."""
        for name in self._commands if names is None else names:
            self.launch(name)

    def launch(self, name: str) -> None:
        """Start one service (again); it must not be running."""
        if self.alive(name):
            raise RuntimeError(f"{name} is already running")
        command, env = self._commands[name]
        host = self.hosts.get(name)
        prefix = () if host is None else host.argv(())
        process, log = spawn_service(self.plan.data_dir, name, command, env, "ab", prefix)
        self._logs.append(log)
        self.processes[name] = process
        self.starts[name] += 1
        self.launched_at[name] = time.time()

    def settled(self, name: str) -> bool:
        """Past start-up: a worker once this incarnation checkpointed an epoch (torch imported,
        the first batches run); the infrastructure, which starts in a moment, at once."""
        if name not in self.worker_names:
            return True
        checkpoint = Path(self.plan.data_dir) / "checkpoints" / f"{name}.pt"
        try:
            return checkpoint.stat().st_mtime > self.launched_at[name]
        except OSError:
            return False

    def alive(self, name: str) -> bool:
        process = self.processes.get(name)
        return process is not None and process.poll() is None

    def pids(self) -> dict[str, int]:
        """The pid of every running service."""
        return {name: p.pid for name, p in self.processes.items() if p.poll() is None}

    def kill(self, name: str) -> None:
        """SIGKILL: no handler runs, nothing is flushed, the process is simply gone."""
        process = self.processes[name]
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
        process.wait()

    def pause(self, name: str) -> None:
        os.kill(self.processes[name].pid, signal.SIGSTOP)

    def resume(self, name: str) -> None:
        os.kill(self.processes[name].pid, signal.SIGCONT)

    def cut(self, name: str) -> None:
        """Unplug `name`'s host from the network: it runs on, and nothing reaches it."""
        self.hosts[name].cut()

    def heal(self, name: str) -> None:
        self.hosts[name].heal()

    def crashed(self) -> list[str]:
        """Services that exited on their own with a non-zero status (not killed by us)."""
        return [
            name
            for name, process in self.processes.items()
            if process.poll() is not None and process.returncode not in (0, -signal.SIGKILL)
        ]
