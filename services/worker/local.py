"""A controller in the worker's own process: try a model under Leyline with nothing else running.

`local_controller(data_dir, worker_id)` starts the real controller (the heuristic policy, its
SQLite journal) on a thread of this process and returns it with the worker's node, wired
either over loopback TCP with CURVE keys made in `data_dir` (the real bus, as `leyline up`
runs it) or over an `InProcessBus`. Examples and tests use it; a real run uses `leyline up`.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from bus import Channel, Envelope
from bus.columnar import SignalColumns
from bus.security import Curve, Role, generate_key
from bus.testing import InProcessBus
from leyline import TelemetryEvent
from services.controller.heuristic import HeuristicPolicy
from services.controller.inference import InferenceLoop
from services.controller.journal import CommandJournal
from services.controller.layout import ActionLayout
from services.controller.process import Controller
from services.node import Node
from services.stack import free_ports
from services.worker.agent import worker_node

_HEARD = [(Channel.SIG, None), (Channel.ACK, None), (Channel.TEL, None)]


class LocalController:
    """The heuristic controller on its own thread, counting what it hears from the worker."""

    def __init__(self, node: Node, data_dir: Path, topology: str = "cnn") -> None:
        self.node = node
        self.journal_path = data_dir / "journal.db"
        self.topology = topology
        self.telemetry = 0
        self.signals = 0
        self.issued = self.applied = self.rejected = 0
        self.outcomes: list[str | None] = []
        node.subscriber.on(Channel.TEL, self._count)
        # The controller takes signals in columns, so they are counted there too.
        node.subscriber.on_columns(Channel.SIG, self._count_signals)
        self._thread = threading.Thread(target=self._run, name="leyline-controller")

    def _count(self, envelope: Envelope[Any]) -> None:
        self.telemetry += isinstance(envelope.message, TelemetryEvent)

    def _count_signals(self, block: SignalColumns) -> None:
        self.signals += len(block)

    def _run(self) -> None:
        journal = CommandJournal(self.journal_path)  # SQLite: opened on the thread using it
        loop = InferenceLoop(HeuristicPolicy(ActionLayout(self.topology)), device="cpu")
        controller = Controller(self.node, loop, journal, topology=self.topology)
        try:
            controller.run()
        finally:
            self.issued, self.applied = controller.issued, controller.applied
            self.rejected = controller.rejected
            self.outcomes = [outcome for *_, outcome in journal.entries()]
            journal.close()

    def start(self) -> LocalController:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the controller thread; its counts and the journal's outcomes are then final."""
        self.node.stop()
        self._thread.join()
        self.node.close()


def local_controller(
    data_dir: Path, worker_id: str, *, bus: InProcessBus | None = None, topology: str = "cnn"
) -> tuple[LocalController, Node]:
    """A started controller and the worker's node, over `bus` or loopback TCP with CURVE."""
    data_dir.mkdir(parents=True, exist_ok=True)
    if bus is not None:
        controller = Node("controller", subscribe=_HEARD, bus=bus)
        worker = worker_node(worker_id, bus=bus)
        bus.connect(controller.publisher, worker.subscriber)
        bus.connect(worker.publisher, controller.subscriber)
    else:
        keys = data_dir / "keys"
        generate_key(keys, "controller", Role.CONTROLLER)
        generate_key(keys, worker_id, Role.WORKER)
        commands, intake = (f"tcp://127.0.0.1:{port}" for port in free_ports(2))
        controller = Node(
            "controller",
            subscribe=_HEARD,
            publish_bind=[commands],
            subscribe_bind=[intake],
            security=Curve.from_directory(keys, "controller"),
        )
        worker = worker_node(
            worker_id,
            commands=[f"controller@{commands}"],
            intake=[f"controller@{intake}"],
            security=Curve.from_directory(keys, worker_id),
        )
    return LocalController(controller, data_dir, topology).start(), worker
