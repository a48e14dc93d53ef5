"""A chaos run: the local stack, a seeded schedule of faults, a clean stop, the checker."""

from __future__ import annotations

import random
import sqlite3
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import msgspec

from services.chaos.checker import RunFiles, Verdict, check, unaccounted_events
from services.chaos.faults import FaultInjector
from services.chaos.hosts import on_hosts
from services.chaos.launcher import INFRASTRUCTURE, ChaosStack
from services.chaos.memory import MemoryWatch
from services.chaos.netns import Network, network
from services.chaos.policy import write_restless_policy
from services.chaos.schedule import LOCAL_KINDS, Fault, FaultKind, random_schedule
from services.controller.journal import CommandJournal
from services.sink.schema import StoreError
from services.stack import plan_stack

#: Epochs a chaos worker is given: more than any run reaches; the run ends by stopping it.
ENDLESS_EPOCHS = 1_000_000


class ChaosSettings(msgspec.Struct, frozen=True, kw_only=True):
    """How a chaos run is set up; short timeouts so that faults resolve in seconds."""

    faults: int = 100
    workers: int = 2
    seed: int = 0
    heartbeat_s: float = 0.25
    stale_after_s: float = 1.5
    ack_timeout_s: float = 0.5
    replay_window: int = 4096
    #: Steady-state RSS growth allowed per process (second half of its life), in MiB.
    max_rss_growth_mib: float = 64.0
    #: RSS no service process may exceed, in MiB (a torch worker sits near 400).
    max_rss_mib: float = 1024.0
    #: Calm after the last fault before the stack is stopped, so repairs and resends finish.
    settle_s: float = 6.0
    #: Each service on a network-namespace host of its own (root and iproute2), so that
    #: partitions can be among the faults.
    namespaces: bool = False
    #: What faults are drawn from; a partition needs `namespaces`.
    kinds: tuple[FaultKind, ...] = LOCAL_KINDS
    #: How long a partition lasts, at least and at most (seconds).
    partition_s: tuple[float, float] = (5.0, 30.0)

    def __post_init__(self) -> None:
        if FaultKind.PARTITION in self.kinds and not self.namespaces:
            raise ValueError("partition faults need namespace hosts (namespaces=True)")


class ChaosResult(msgspec.Struct, kw_only=True):
    """What a run did and what the checker found."""

    faults: list[Fault]
    duration_s: float
    verdict: Verdict
    peak_rss_mib: dict[str, float]

    def counts_json(self) -> str:
        """One JSON line: the verdict's counts, the fault tally and the outcome."""
        tally: dict[str, int] = {}
        for fault in self.faults:
            key = f"{fault.kind.value}_{fault.service}"
            tally[key] = tally.get(key, 0) + 1
        line = {
            "passed": self.verdict.passed,
            "faults": len(self.faults),
            "fault_kinds": dict(sorted(tally.items())),
            "duration_s": round(self.duration_s, 1),
            **msgspec.to_builtins(self.verdict.counts),
            "peak_rss_mib": {k: round(v, 1) for k, v in self.peak_rss_mib.items()},
        }
        return msgspec.json.encode(line).decode()


def service_env(
    settings: ChaosSettings, data_dir: Path, workers: list[str]
) -> dict[str, dict[str, str]]:
    """The LEYLINE_* settings a chaos stack adds to the planned ones, per service."""
    bus = {
        "LEYLINE_BUS_HEARTBEAT_S": str(settings.heartbeat_s),
        "LEYLINE_BUS_STALE_AFTER_S": str(settings.stale_after_s),
        "LEYLINE_BUS_REPLAY_WINDOW": str(settings.replay_window),
    }
    policy = write_restless_policy(data_dir / "restless-policy.pt", settings.seed)
    env = {name: dict(bus) for name in (*INFRASTRUCTURE, *workers)}
    env["controller"].update(
        {
            "LEYLINE_CONTROLLER_ACK_TIMEOUT_S": str(settings.ack_timeout_s),
            "LEYLINE_CONTROLLER_POLICY": "mlp",
            "LEYLINE_CONTROLLER_CHECKPOINT": str(policy),
            "LEYLINE_CONTROLLER_DEVICE": "cpu",
        }
    )
    return env


def build_stack(
    settings: ChaosSettings,
    data_dir: Path,
    extra_env: Mapping[str, Mapping[str, str]] | None = None,
    epochs: int = ENDLESS_EPOCHS,
    hosts: Network | None = None,
) -> ChaosStack:
    """A chaos stack in `data_dir` (not started); `extra_env` overrides per service. On
    `hosts` each service runs on the host of its name."""
    plan = plan_stack(settings.workers, epochs, str(data_dir), settings.seed)
    placed = None
    if hosts is not None:
        placed = {name: hosts[name] for name, _, _ in plan.services}
        plan = on_hosts(plan, {name: host.address for name, host in placed.items()})
    workers = [name for name, command, _ in plan.services if command == "worker"]
    env = service_env(settings, data_dir, workers)
    for name, extra in (extra_env or {}).items():
        env[name].update(extra)
    return ChaosStack(plan, env, placed)


def service_names(workers: int) -> list[str]:
    """The services of a chaos stack of `workers` workers, in start order."""
    return [*INFRASTRUCTURE, *(f"w{index}" for index in range(1, workers + 1))]


def workers_training(stack: ChaosStack) -> Callable[[], bool]:
    """True once every worker has checkpointed at least one epoch."""
    checkpoints = Path(stack.plan.data_dir) / "checkpoints"
    names = stack.worker_names
    return lambda: all((checkpoints / f"{name}.pt").is_file() for name in names)


def unacked(journal: Path) -> int:
    """Commands the controller journaled and has not seen acknowledged."""
    if not journal.is_file():
        return 0
    opened = CommandJournal(journal)
    try:
        return len(opened.unacked())
    finally:
        opened.close()


def sink_caught_up(files: RunFiles, workers: list[str], since_ns: int) -> bool:
    """The sink stored an event sent after `since_ns` from each of `workers` (they report
    every epoch), and holds every earlier sequence it knows of (stored or recorded lost)."""
    if not files.sink_db.is_file():
        return False
    uri = f"{files.sink_db.resolve().as_uri()}?mode=ro"
    try:
        with sqlite3.connect(uri, uri=True, timeout=1.0) as db:
            recent = {
                sender
                for (sender,) in db.execute(
                    "SELECT DISTINCT sender FROM events WHERE channel = 'tel' AND sent_ns > ?",
                    (since_ns,),
                )
            }
        return recent >= set(workers) and unaccounted_events(files) == 0
    except (sqlite3.Error, StoreError):  # the sink has not created its tables yet
        return False


def settle_and_stop(
    injector: FaultInjector, settings: ChaosSettings, files: RunFiles, timeout_s: float = 30.0
) -> None:
    """Calm for `settle_s`; then until the sink has caught up with every publisher and every
    command is acknowledged (or `timeout_s` passed); then a clean stop."""
    injector.wait(settings.settle_s)
    since = time.time_ns()
    workers = injector.stack.worker_names
    injector.wait_until(
        lambda: sink_caught_up(files, workers, since) and unacked(files.journal) == 0,
        timeout_s,
    )
    injector.stack.stop()


def judge(
    injector: FaultInjector, settings: ChaosSettings, data_dir: Path
) -> tuple[Verdict, dict[str, float]]:
    """The checker's verdict on a stopped stack, with the memory bound and crashes added."""
    verdict = check(RunFiles.of(data_dir, settings.replay_window))
    verdict.failures.extend(
        injector.memory.violations(settings.max_rss_growth_mib, settings.max_rss_mib)
    )
    verdict.failures.extend(
        f"{name} exited with status {injector.stack.processes[name].returncode}"
        for name in injector.stack.crashed()
    )
    return verdict, injector.memory.peak_mib()


def run_chaos(
    settings: ChaosSettings,
    data_dir: Path,
    on_fault: Callable[[int, Fault], None] | None = None,
) -> ChaosResult:
    """Run the stack under `settings.faults` random faults, stop it cleanly, check it; with
    `settings.namespaces`, each service on a namespace host of its own."""
    if not settings.namespaces:
        return _run(settings, data_dir, on_fault, None)
    with network(service_names(settings.workers)) as hosts:
        return _run(settings, data_dir, on_fault, hosts)


def _run(
    settings: ChaosSettings,
    data_dir: Path,
    on_fault: Callable[[int, Fault], None] | None,
    hosts: Network | None,
) -> ChaosResult:
    started = time.monotonic()
    stack = build_stack(settings, data_dir, hosts=hosts)
    injector = FaultInjector(stack, MemoryWatch())
    schedule = random_schedule(
        settings.faults,
        stack.worker_names,
        random.Random(settings.seed),
        kinds=settings.kinds,
        partition_s=settings.partition_s,
    )
    try:
        stack.start()
        if not injector.wait_until(workers_training(stack), 120.0):
            raise RuntimeError(f"the stack did not start training; see {data_dir / 'logs'}")
        for number, fault in enumerate(schedule, 1):
            if on_fault is not None:
                on_fault(number, fault)
            injector.inject(fault)
        settle_and_stop(injector, settings, RunFiles.of(data_dir, settings.replay_window))
    finally:
        stack.stop()
    verdict, peaks = judge(injector, settings, data_dir)
    return ChaosResult(
        faults=injector.done,
        duration_s=time.monotonic() - started,
        verdict=verdict,
        peak_rss_mib=peaks,
    )
