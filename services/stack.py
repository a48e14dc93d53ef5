"""`leyline up`: the sink, the controller and N workers as processes on loopback."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO

import msgspec

from bus.security import Role, ensure_keys
from services.observer.endpoints import TOOL_IDENTITY, BusMap, write_bus_map
from services.progress import WorkerProgress, read_progress

#: Where Linux keeps its range of ephemeral ports (the local ports of outgoing connections).
_EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
#: The lowest port handed out: the ones below are left to other software's fixed listeners.
_LOWEST_PORT = 10_000


def free_ports(count: int) -> list[int]:
    """`count` distinct TCP ports free on 127.0.0.1 right now, below the ephemeral range.

    A service binds its port a moment after the port is chosen. A port of the ephemeral
    range could meanwhile become the local port of some process's outgoing connection
    (one service connecting to another), and the bind would fail with "address in use".
    Below that range no connection is ever given one.
    """
    first_ephemeral = _first_ephemeral_port()
    candidates = range(_LOWEST_PORT, first_ephemeral)
    if len(candidates) < 4 * count:  # an unusual range: let the kernel choose
        return _kernel_chosen_ports(count)
    ports: list[int] = []
    for port in random.sample(candidates, min(len(candidates), 64 * count)):
        if _bindable(port):
            ports.append(port)
            if len(ports) == count:
                return ports
    raise OSError(f"no {count} free ports in {candidates.start}-{candidates.stop - 1}")


def _first_ephemeral_port() -> int:
    try:
        return int(_EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768  # Linux's default


def _bindable(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _kernel_chosen_ports(count: int) -> list[int]:
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


#: What a run leaves in its data folder; a new run moves these aside first.
RUN_FILES = (
    "sink.db", "sink.db-wal", "sink.db-shm", "checkpoints", "outbox", "logs", "bus.json",
)  # fmt: skip


def archive_previous_run(data_dir: str | Path) -> Path | None:
    """Move the last run's files into `previous-runs/<UTC time>/`; None when there were none.

    A new `leyline up` must not resume finished workers or mix its records with the last
    run's, and nothing a user ran should be deleted.
    """
    data = Path(data_dir)
    found = [data / name for name in RUN_FILES if (data / name).exists()]
    found += sorted(data.glob("controller-journal.db*"))
    if not found:
        return None
    archive = data / "previous-runs" / time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    archive.mkdir(parents=True, exist_ok=True)
    for path in found:
        path.rename(archive / path.name)
    return archive


class StackPlan(msgspec.Struct, frozen=True):
    """Every process of a local stack: its name and its LEYLINE_* environment."""

    data_dir: str
    services: tuple[tuple[str, str, dict[str, str]], ...]
    #: Identities whose keys this plan had to create (the stack's first run).
    created_keys: tuple[str, ...] = ()

    @property
    def sink_db(self) -> Path:
        return Path(self.data_dir) / "sink.db"


def stack_identities(workers: int) -> dict[str, Role]:
    """Every identity of a local stack: controller, sink, workers w1..wN and one tool key."""
    wanted = {"controller": Role.CONTROLLER, "sink": Role.SINK, TOOL_IDENTITY: Role.TOOL}
    wanted.update({f"w{index}": Role.WORKER for index in range(1, workers + 1)})
    return wanted


class StackModel(msgspec.Struct, frozen=True, kw_only=True):
    """What the stack trains and who decides: the host family and the controller's policy."""

    topology: str = "cnn"
    policy: str = "heuristic"
    checkpoint: str | None = None

    def controller_env(self) -> dict[str, str]:
        env = {
            "LEYLINE_CONTROLLER_TOPOLOGY": self.topology,
            "LEYLINE_CONTROLLER_POLICY": self.policy,
        }
        if self.checkpoint is not None:
            env["LEYLINE_CONTROLLER_CHECKPOINT"] = str(Path(self.checkpoint).resolve())
        return env


def plan_stack(
    workers: int,
    epochs: int,
    data_dir: str,
    seed: int = 0,
    insecure: bool = False,
    model: StackModel | None = None,
) -> StackPlan:
    """Assign free ports and build each service's environment.

    Every service authenticates with its key from `<data_dir>/keys` (see `leyline keys`),
    unless `insecure`; connect addresses name the identity whose key they pin. `model` sets
    the workers' and the controller's topology and the controller's policy. The endpoints
    a tool needs (`leyline topic`, `record`, `play`) go into `<data_dir>/bus.json`.
    """
    model = model or StackModel()
    commands, controller_intake, sink_intake, *published = (
        f"tcp://127.0.0.1:{port}" for port in free_ports(3 + workers)
    )
    data = Path(data_dir)
    bus = {"LEYLINE_BUS_KEYS_DIR": str(data / "keys")}
    created: list[str] = []
    if insecure:
        bus["LEYLINE_BUS_INSECURE"] = "true"
    else:
        created = ensure_keys(data / "keys", stack_identities(workers))
    services: list[tuple[str, str, dict[str, str]]] = [
        (
            "sink",
            "sink",
            {**bus, "LEYLINE_SINK_INTAKE": sink_intake, "LEYLINE_SINK_DB": str(data / "sink.db")},
        ),
        (
            "controller",
            "controller",
            {
                **bus,
                "LEYLINE_CONTROLLER_COMMANDS": commands,
                "LEYLINE_CONTROLLER_INTAKE": controller_intake,
                "LEYLINE_CONTROLLER_SINK": f"sink@{sink_intake}",
                "LEYLINE_CONTROLLER_JOURNAL": str(data / "controller-journal.db"),
                **model.controller_env(),
            },
        ),
    ]
    for index in range(1, workers + 1):
        services.append(
            (
                f"w{index}",
                "worker",
                {
                    **bus,
                    "LEYLINE_WORKER_ID": f"w{index}",
                    "LEYLINE_WORKER_COMMANDS": f"controller@{commands}",
                    "LEYLINE_WORKER_INTAKE": json.dumps(
                        [f"controller@{controller_intake}", f"sink@{sink_intake}"]
                    ),
                    "LEYLINE_WORKER_PUBLISH": published[index - 1],
                    "LEYLINE_WORKER_EPOCHS": str(epochs),
                    "LEYLINE_WORKER_DATA_DIR": str(data),
                    "LEYLINE_WORKER_SEED": str(seed + index),
                    "LEYLINE_WORKER_TOPOLOGY": model.topology,
                },
            )
        )
    write_bus_map(
        data,
        BusMap(
            publishers=(
                f"controller@{commands}",
                *(f"w{index}@{address}" for index, address in enumerate(published, 1)),
            ),
            intakes=(f"controller@{controller_intake}", f"sink@{sink_intake}"),
            keys_dir=bus["LEYLINE_BUS_KEYS_DIR"],
            insecure=insecure,
        ),
    )
    return StackPlan(str(data), tuple(services), tuple(created))


class RestartPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """How `Stack` restarts a service that died: bounded in number, waiting longer each time.

    A service can die where it cannot help it (a libzmq assertion under a flood, the OOM
    killer); it resumes from what it keeps on disk: a worker from its checkpoint, the
    controller from its journal, the sink from its database.
    """

    max_restarts: int = 5
    backoff_s: float = 0.5
    backoff_max_s: float = 8.0

    def delay_s(self, restart: int) -> float:
        """The wait before restart number `restart` (1 for the first)."""
        return float(min(self.backoff_max_s, self.backoff_s * 2 ** (restart - 1)))


class Stack:
    """Starts the planned processes, restarts those that die, and stops them cleanly.

    A service dies when a signal kills it or it exits non-zero; a worker that exits 0 has
    finished its epochs and stays finished. Each restart is reported through `report` (stdout
    by default) and counted in `restarts`.
    """

    def __init__(
        self,
        plan: StackPlan,
        *,
        restart: RestartPolicy | None = None,
        report: Callable[[str], None] | None = None,
    ) -> None:
        self.plan = plan
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.restarts: dict[str, int] = {}
        self._policy = restart or RestartPolicy()
        self._report = report or _print
        self._services = {name: (command, env) for name, command, env in plan.services}
        #: Dead services waiting for their restart: when (monotonic) it is due.
        self._due: dict[str, float] = {}
        self._given_up: set[str] = set()
        self._logs: list[IO[bytes]] = []

    def start(self) -> None:
        for name in self._services:
            self._spawn(name, "wb")

    def workers(self) -> dict[str, subprocess.Popen[bytes]]:
        return {n: p for n, p in self.processes.items() if n not in ("sink", "controller")}

    def failed_early(self) -> list[str]:
        """Services that exited before the workers finished and will not be restarted."""
        return [
            name
            for name in ("sink", "controller")
            if name in self.processes
            and self.processes[name].poll() is not None
            and name not in self._due
        ]

    def supervise(self) -> None:
        """Schedule a restart for each service that died; start those whose wait is over."""
        now = time.monotonic()
        for name, process in self.processes.items():
            code = process.poll()
            if code is None or code == 0 or name in self._due or name in self._given_up:
                continue
            restart = self.restarts.get(name, 0) + 1
            if restart > self._policy.max_restarts:
                self._given_up.add(name)
                self._report(f"leyline up: {name} {_death(code)}; not restarted again")
                continue
            delay = self._policy.delay_s(restart)
            self._due[name] = now + delay
            self._report(
                f"leyline up: {name} {_death(code)}; restart {restart} of "
                f"{self._policy.max_restarts} in {delay:g} s"
            )
        for name in [n for n, due in self._due.items() if due <= now]:
            del self._due[name]
            self.restarts[name] = self.restarts.get(name, 0) + 1
            self._spawn(name, "ab")

    def wait_workers(
        self, on_progress: Callable[[list[WorkerProgress]], None], interval_s: float = 0.5
    ) -> bool:
        """Until every worker exits for good; True when all exited 0 and no service failed."""
        while True:
            self.supervise()
            if not any(p.poll() is None or n in self._due for n, p in self.workers().items()):
                break
            if self.failed_early():
                return False
            on_progress(read_progress(self.plan.sink_db))
            time.sleep(interval_s)
        on_progress(read_progress(self.plan.sink_db))
        return all(p.returncode == 0 for p in self.workers().values())

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM workers, then the controller, then the sink (so it stores the last words)."""
        self._due.clear()
        order = [*self.workers(), "controller", "sink"]
        for name in order:
            process = self.processes.get(name)
            if process is None or process.poll() is not None:
                continue
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for log in self._logs:
            log.close()

    def _spawn(self, name: str, mode: str) -> None:
        command, env = self._services[name]
        process, log = spawn_service(self.plan.data_dir, name, command, env, mode)
        self._logs.append(log)
        self.processes[name] = process


def spawn_service(
    data_dir: str,
    name: str,
    command: str,
    env: dict[str, str],
    mode: str = "wb",
    prefix: Sequence[str] = (),
) -> tuple[subprocess.Popen[bytes], IO[bytes]]:
    """`leyline <command>` as a process, its output in `<data_dir>/logs/<name>.log`.

    `prefix` runs it through another command that then executes it in place (the same
    process), such as `ip netns exec <host>` to run it on a namespace host.
    """
    logs = Path(data_dir) / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log: IO[bytes] = (logs / f"{name}.log").open(mode)
    process = subprocess.Popen(
        [*prefix, sys.executable, "-m", "services.cli", command],
        env={**os.environ, **env},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    return process, log


def _death(code: int) -> str:
    if code < 0:
        return f"was killed by {signal.Signals(-code).name}"
    return f"exited with status {code}"


def _print(line: str) -> None:
    print(line, flush=True)
