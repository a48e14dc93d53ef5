"""Many simulated workers in one process: one poller over all their sockets, epochs in step.

Each worker is its own identity with its own publisher and subscriber: the bus binds every
message to the CURVE key of the connection it came over, so workers cannot share a socket.
What they share is what the protocol leaves free: the process's ZeroMQ context (one I/O
thread, one ZAP handler for the replay servers), one trust store (read once, not once per
worker) and one thread: the group services every publisher itself, since 1,024 publisher
threads waking every 20 ms would take more CPU than the workers' whole protocol. Every
worker's epoch starts at the same instant (`start_at + k * epoch_s`, the same in every
process of a run), so the controller sees all workers' signals arrive at once.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import structlog
import zmq

from bus import Channel
from bus.security import Curve, TrustStore, load_key_pair, secret_key_path, trust_dir
from bus.sockets import wait_ms
from services.cli._service import make_node
from services.config import BusConfig
from services.simworker.config import SimulateConfig
from services.simworker.worker import SimulatedWorker
from services.worker.agent import FAREWELL_REPEAT_S, FAREWELL_TIMEOUT_S

_log = structlog.get_logger("leyline.simulate")
#: How often every worker's bus is serviced (heartbeats, liveness, subscriptions, replays):
#: often enough for 1 s heartbeats, rarely enough that 1,024 idle workers cost little.
SERVICE_INTERVAL_S = 0.25
#: How often `connect` asks which workers are heard. Asking 64 workers every 20 ms took a
#: tenth of a core per process: at 1,024 workers sixteen processes took 1.6 of this host's 2
#: cores doing it, and the controller, starved, let CURVE handshakes run out their 30 s.
CONNECT_CHECK_S = 0.1


def worker_ids(config: SimulateConfig) -> list[str]:
    return [f"{config.prefix}{n}" for n in range(config.first, config.first + config.workers)]


class WorkerGroup:
    """The simulated workers of one process and the loop that drives them all."""

    def __init__(self, config: SimulateConfig, bus: BusConfig) -> None:
        self.config = config
        trust = None if bus.insecure else TrustStore(trust_dir(bus.keys_dir))
        self.workers: list[SimulatedWorker] = []
        for index, worker_id in enumerate(worker_ids(config)):
            curve = None
            if trust is not None:
                curve = Curve(load_key_pair(secret_key_path(bus.keys_dir, worker_id)), trust)
            node = make_node(
                worker_id,
                bus,
                subscribe=[(Channel.CMD, worker_id)],
                publish_connect=list(config.intake),
                subscribe_connect=[config.commands],
                state_dir=Path(config.data_dir),
                curve=curve,
                publisher_thread=False,  # the group services them all (`pump`)
            )
            seed = config.seed * 1_000_003 + config.first + index
            self.workers.append(SimulatedWorker(node, worker_id, seed, config.epochs))
        self._poller = zmq.Poller()
        self._owner: dict[zmq.Socket[bytes], SimulatedWorker] = {}
        for worker in self.workers:
            for sock in worker.node.subscriber.sockets:
                self._poller.register(sock, zmq.POLLIN)
                self._owner[sock] = worker
        self._next_service = 0.0
        self.stopping = False
        self.late_epochs = 0
        self.connect_s = 0.0
        self.start_at = 0.0
        signal.signal(signal.SIGINT, self.stop)
        signal.signal(signal.SIGTERM, self.stop)

    def stop(self, *_: object) -> None:
        self.stopping = True

    def pump(self, timeout_s: float) -> None:
        """Deliver what arrived for any worker; service every worker's bus when it is due."""
        for sock, _ in self._poller.poll(wait_ms(timeout_s)):
            worker = self._owner[sock]
            worker.node.subscriber.drain()
            worker.apply_due()
            worker.node.publisher.flush()  # its acks now, not at the next service
        now = time.monotonic()
        if now >= self._next_service:
            self._next_service = now + SERVICE_INTERVAL_S
            for worker in self.workers:
                worker.node.pump(0)
                if worker.due:  # drained by that pass: applied now, not at the next frame
                    worker.apply_due()
                    worker.node.publisher.flush()

    def connect(self) -> int:
        """Wait until every worker is heard (or the timeout), then each says hello; returns
        how many were heard."""
        started = time.monotonic()
        deadline = started + self.config.connect_timeout_s
        waiting = list(self.workers)
        while waiting and time.monotonic() < deadline and not self.stopping:
            check_at = time.monotonic() + CONNECT_CHECK_S
            while time.monotonic() < check_at:
                self.pump(max(0.0, check_at - time.monotonic()))
            waiting = [worker for worker in waiting if not worker.heard()]
        if waiting:
            _log.warning("peers not ready, starting anyway", unheard=len(waiting))
        for worker in self.workers:
            worker.hello()
            worker.node.publisher.flush()
        self.connect_s = time.monotonic() - started
        return len(self.workers) - len(waiting)

    def run(self, start_at: float) -> None:
        """Every worker's epochs, all at once every `epoch_s` from `start_at` (unix time)."""
        epoch_s = self.config.epoch_s
        self.start_at = due = start_at
        while not self.stopping and not all(worker.done for worker in self.workers):
            now = time.time()
            if now >= due:
                for worker in self.workers:
                    if not worker.done:
                        worker.run_epoch()
                        worker.node.publisher.flush()
                        self.pump(0.0)  # commands are timed on receipt: take them as they come
                due += epoch_s
                if time.time() >= due:  # the burst took longer than an epoch: skip, not pile up
                    self.late_epochs += 1
                    due = time.time() + epoch_s
            self.pump(min(max(0.0, due - time.time()), SERVICE_INTERVAL_S))
        settle_until = time.monotonic() + self.config.settle_s
        while not self.stopping and time.monotonic() < settle_until:
            self.pump(SERVICE_INTERVAL_S)
        self.farewell()

    def farewell(self) -> None:
        """Every worker's farewell, said again each `FAREWELL_REPEAT_S` until the controller
        answers it, for at most `FAREWELL_TIMEOUT_S` (as `Agent.finish`, for all at once)."""
        deadline = time.monotonic() + FAREWELL_TIMEOUT_S
        waiting = list(self.workers)
        while waiting and not self.stopping and time.monotonic() < deadline:
            for worker in waiting:
                worker.say_farewell()
                worker.node.publisher.flush()
            again = min(time.monotonic() + FAREWELL_REPEAT_S, deadline)
            while waiting and time.monotonic() < again:
                self.pump(min(SERVICE_INTERVAL_S, max(0.0, again - time.monotonic())))
                waiting = [worker for worker in waiting if not worker.farewell_answered]
        if waiting:
            _log.warning("farewells not answered", unanswered=len(waiting))

    def close(self) -> None:
        for worker in self.workers:
            worker.node.close()

    def results(self) -> dict[str, Any]:
        return {
            "connect_s": round(self.connect_s, 3),
            "start_at": self.start_at,
            "late_epochs": self.late_epochs,
            "niceness": os.nice(0),
            "workers": [worker.summary() for worker in self.workers],
        }


def run_group(
    config: SimulateConfig, bus: BusConfig, start: Callable[[WorkerGroup], float]
) -> dict[str, Any]:
    """Connect, run every epoch from the time `start` says (now if earlier) and settle; the
    results of every worker of this process."""
    built = time.monotonic()
    group = WorkerGroup(config, bus)
    try:
        built_s = time.monotonic() - built
        heard = group.connect()
        _log.info(
            "connected",
            first=config.first,
            built_s=round(built_s, 3),
            connect_s=round(group.connect_s, 3),
            heard=heard,
        )
        start_at = max(start(group), time.time())
        _log.info("simulating", workers=len(group.workers), heard=heard, epochs=config.epochs)
        group.run(start_at)
    finally:
        group.close()
    results = group.results()
    if config.results is not None:
        Path(config.results).write_text(json.dumps(results), encoding="utf-8")
    return results


def merge_results(parts: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The results of a run's processes as one."""
    return {
        "connect_s": max((p["connect_s"] for p in parts), default=0.0),
        "start_at": min((p["start_at"] for p in parts), default=0.0),
        "late_epochs": max((p["late_epochs"] for p in parts), default=0),
        "niceness": sorted({p["niceness"] for p in parts}),
        "workers": [w for p in parts for w in p["workers"]],
    }
