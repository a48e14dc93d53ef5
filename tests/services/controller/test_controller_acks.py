"""The real controller on real sockets settles a command only on what its own worker says.

The controller runs on its own `Node` over tcp with a journal and the heuristic policy; the
test speaks as worker w1 (and as an impostor) through bus Publishers, and, where it matters,
runs a real worker built as `leyline worker` builds it.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
from controller_signals import SignalFactory

from bus import Channel, Publisher
from leyline import AckOutcome, AdaptationCommand, CommandAck, CommandType, WorkerHello, new_id
from leyline.actions import SLOT_IDS
from services.cli.worker import build_worker
from services.config import BusConfig, WorkerConfig
from services.controller import ActionLayout, HeuristicPolicy, InferenceLoop
from services.controller.journal import CommandJournal
from services.controller.process import Controller
from services.guards import TransitionGuard
from services.node import Node
from services.stack import free_ports
from services.worker.process import Worker

WORKER = "w1"
SLOT = SLOT_IDS["cnn"][0]
#: Bounds a hang only.
TIMEOUT_S = 15.0
#: Longer than any test here runs: only an explicit resend sends a command again.
ACK_TIMEOUT_S = 600.0
T = TypeVar("T")


class ControllerRig:
    """A real controller, a journal with commands for w1 issued before it started, and the
    publishers the test speaks through."""

    def __init__(
        self, data_dir: Path, commands: list[AdaptationCommand], stale_after_s: float = 5.0
    ) -> None:
        self.commands_address, self.intake = (f"tcp://127.0.0.1:{p}" for p in free_ports(2))
        self.journal = CommandJournal(data_dir / "journal.db")
        self.issued = [self.journal.issue(WORKER, SLOT, c).command for c in commands]
        self.node = Node(
            "controller",
            subscribe=[(Channel.SIG, None), (Channel.ACK, None), (Channel.REP, None)],
            publish_bind=[self.commands_address],
            subscribe_bind=[self.intake],
            guards={Channel.REP: TransitionGuard()},
            stale_after_s=stale_after_s,
        )
        loop = InferenceLoop(HeuristicPolicy(ActionLayout("cnn")), device="cpu")
        self.controller = Controller(self.node, loop, self.journal, ack_timeout_s=ACK_TIMEOUT_S)
        self.peers: list[Publisher] = []
        #: Workers the rig pumps, and every worker it made (each closed at the end).
        self.workers: list[Worker] = []
        self.made: list[Worker] = []

    def speaker(self, sender: str) -> Publisher:
        """A publisher on the controller's intake, heard by it, sending as `sender`."""
        publisher = Publisher(self.intake, sender, bind=False)
        self.peers.append(publisher)
        self.wait(lambda: self.node.subscriber.wait_ready(0.0, publishers=[sender]) or None)
        return publisher

    def worker(self, data_dir: Path) -> Worker:
        """A real worker connected to this controller, built as `leyline worker` builds it."""
        config = WorkerConfig(
            id=WORKER, commands=self.commands_address, intake=(self.intake,), data_dir=str(data_dir)
        )
        handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            worker = build_worker(config, BusConfig(insecure=True))
        finally:  # the worker's node takes over SIGINT and SIGTERM; the test run keeps them
            for sig, handler in handlers.items():
                signal.signal(sig, handler)
        self.workers.append(worker)
        self.made.append(worker)

        def connected() -> bool | None:
            heard = self.node.subscriber.wait_ready(0.0, publishers=[WORKER])
            return (heard and worker.node.subscriber.wait_ready(0.0)) or None

        self.wait(connected)
        return worker

    def pump(self) -> None:
        self.node.pump(0.005)
        self.controller.tick()
        for peer in self.peers:
            peer.service()
        for worker in self.workers:
            worker.safe_point(0.005)

    def wait(self, found: Callable[[], T | None], what: str = "the controller") -> T:
        deadline = time.monotonic() + TIMEOUT_S
        while time.monotonic() < deadline:
            self.pump()
            value = found()
            if value is not None:
                return value
        raise AssertionError(f"timed out waiting for {what}")

    def settle(self, seconds: float = 0.3) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.pump()

    def outcomes(self) -> list[str | None]:
        return [outcome for _, _, _, outcome in self.journal.entries()]

    def close(self) -> None:
        for worker in self.made:
            worker.node.close()
        for peer in self.peers:
            peer.close()
        self.node.close()
        self.journal.close()


def _germinate() -> AdaptationCommand:
    return AdaptationCommand(
        command_id=new_id(),
        command_type=CommandType.GERMINATE,
        target_slot_id=SLOT,
        blueprint_id="norm",
    )


def _ack(command: AdaptationCommand, outcome: AckOutcome, worker: str = WORKER) -> CommandAck:
    return CommandAck(
        command_id=command.command_id,
        worker_id=worker,
        outcome=outcome,
        command_type=command.command_type,
        sequence=command.sequence,
        reason="illegal_transition" if outcome is AckOutcome.REJECTED else "",
    )


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[ControllerRig]:
    controller = ControllerRig(tmp_path, [_germinate()])
    try:
        yield controller
    finally:
        controller.close()


def test_a_hello_for_another_worker_is_ignored_and_counted(rig: ControllerRig) -> None:
    impostor = rig.speaker("evil")
    impostor.publish(Channel.ACK, WorkerHello(worker_id=WORKER, last_applied_sequence=5), "evil")
    rig.settle()

    assert list(rig.controller.in_flight) == [rig.issued[0].command_id]
    assert rig.outcomes() == [None]
    assert rig.wait(lambda: rig.controller.misattributed or None, "the hello counted") == 1


def test_an_ack_from_another_sender_settles_nothing(rig: ControllerRig) -> None:
    impostor = rig.speaker("evil")
    impostor.publish(Channel.ACK, _ack(rig.issued[0], AckOutcome.APPLIED), "evil")
    rig.settle()

    assert list(rig.controller.in_flight) == [rig.issued[0].command_id]
    assert (rig.outcomes(), rig.controller.applied) == ([None], 0)
    assert rig.wait(lambda: rig.controller.misattributed or None, "the ack counted") == 1


def test_the_workers_own_hello_and_rejected_ack_settle_for_good(rig: ControllerRig) -> None:
    worker = rig.speaker(WORKER)
    worker.publish(Channel.ACK, _ack(rig.issued[0], AckOutcome.REJECTED), WORKER)
    rig.wait(lambda: rig.controller.rejected or None, "the rejection")
    rig.controller.ack_timeout_s = 0.0  # every unsettled command would now be resent
    rig.settle()

    assert rig.controller.in_flight == {}
    assert rig.outcomes() == ["REJECTED"]
    assert rig.controller.resent == 0


def test_an_ack_settles_the_earlier_commands_whose_acks_were_lost(tmp_path: Path) -> None:
    rig = ControllerRig(tmp_path, [_germinate(), _germinate(), _germinate()])
    try:
        worker = rig.speaker(WORKER)
        # The acks of 1 and 2 were lost in a partition; the worker takes commands in order.
        worker.publish(Channel.ACK, _ack(rig.issued[2], AckOutcome.APPLIED), WORKER)
        rig.wait(lambda: rig.controller.applied or None, "the ack of the third")
        assert rig.controller.in_flight == {}
        assert rig.outcomes() == ["DUPLICATE", "DUPLICATE", "APPLIED"]
    finally:
        rig.close()


def test_a_worker_heard_again_after_a_silence_gets_its_unacked_commands_at_once_and_anew(
    tmp_path: Path,
) -> None:
    # The ack timeout is longer than the test: only the worker's recovery can resend.
    rig = ControllerRig(tmp_path, [_germinate()], stale_after_s=0.3)
    try:
        first = rig.speaker(WORKER)
        rig.settle(0.1)
        assert rig.controller.resent == 0
        first.close()
        rig.peers.remove(first)
        rig.settle(0.8)  # silent past stale_after_s: the controller marks w1 stale
        assert rig.controller.resent == 0
        flight = rig.controller.in_flight[rig.issued[0].command_id]
        flight.attempts = 6  # as if resent into the cut: its backoff had grown to the cap
        rig.speaker(WORKER)  # heard again, as after a healed partition
        assert rig.wait(lambda: rig.controller.resent or None, "the resend") == 1
        assert list(rig.controller.in_flight) == [rig.issued[0].command_id]
        # Its backoff starts again: a resend lost before the worker subscribed again is
        # followed by the next one ack_timeout_s later, not the cap's 30 s.
        assert flight.attempts == 1
        assert flight.resend_at - time.monotonic() <= ACK_TIMEOUT_S
    finally:
        rig.close()


def test_a_state_query_answered_before_a_crash_is_answered_again_after_it(
    tmp_path: Path,
) -> None:
    query = AdaptationCommand(command_id=new_id(), command_type=CommandType.REQUEST_STATE)
    rig = ControllerRig(tmp_path, [query])
    try:
        first = rig.worker(tmp_path / "worker")
        first.hello()
        rig.wait(lambda: rig.controller.applied or None, "the query to be answered")
        assert rig.outcomes() == ["APPLIED"] and first.ledger.last_applied == 1
        assert not first.checkpoint.path.exists()  # a query costs no checkpoint

        rig.workers.remove(first)
        rig.made.remove(first)
        first.node.close()  # it dies before anything else made it write one
        second = rig.worker(tmp_path / "worker")
        assert second.ledger.last_applied == 0
        second.hello()

        rig.wait(lambda: second.ledger.last_applied or None, "the query to be sent again")
        assert second.ledger.last_applied == 1  # so the next command is not held behind it
        assert rig.outcomes() == ["APPLIED"]
    finally:
        rig.close()


def test_a_farewell_settles_what_the_worker_will_never_apply(tmp_path: Path) -> None:
    rig = ControllerRig(tmp_path, [_germinate(), _germinate(), _germinate()])
    try:
        worker = rig.speaker(WORKER)
        # The run ended having applied 1 (its ack lost); 2 and 3 were still in flight.
        farewell = WorkerHello(worker_id=WORKER, last_applied_sequence=1, finished=True)
        worker.publish(Channel.ACK, farewell, WORKER)
        rig.wait(lambda: rig.controller.unapplied or None, "the farewell")

        assert rig.outcomes() == ["DUPLICATE", "UNAPPLIED", "UNAPPLIED"]
        assert rig.controller.in_flight == {}
        assert rig.controller.finished == {WORKER}
        rig.controller.ack_timeout_s = 0.0  # anything still in flight would now be resent
        rig.settle()
        assert rig.controller.resent == 0
        # The same id starting again is commanded again.
        worker.publish(Channel.ACK, WorkerHello(worker_id=WORKER), WORKER)
        rig.wait(lambda: (not rig.controller.finished) or None, "the new run's hello")
    finally:
        rig.close()


def test_a_farewell_forged_for_another_worker_settles_nothing(rig: ControllerRig) -> None:
    impostor = rig.speaker("evil")
    farewell = WorkerHello(worker_id=WORKER, last_applied_sequence=0, finished=True)
    impostor.publish(Channel.ACK, farewell, "evil")
    assert rig.wait(lambda: rig.controller.misattributed or None, "the farewell counted") == 1

    assert list(rig.controller.in_flight) == [rig.issued[0].command_id]
    assert rig.outcomes() == [None]
    assert (rig.controller.finished, rig.controller.unapplied) == (set(), 0)


def test_a_flood_of_farewells_settles_once_and_costs_one_answer_each(
    rig: ControllerRig,
) -> None:
    worker = rig.speaker(WORKER)
    sent = rig.node.publisher.metrics.sent
    before = sent[Channel.CMD]
    farewell = WorkerHello(worker_id=WORKER, last_applied_sequence=0, finished=True)
    for _ in range(200):
        worker.publish(Channel.ACK, farewell, WORKER)
    rig.wait(lambda: sent[Channel.CMD] - before >= 200 or None, "every farewell answered")
    rig.settle()

    assert sent[Channel.CMD] - before == 200  # one answer each: nothing amplified
    assert rig.outcomes() == ["UNAPPLIED"] and rig.controller.unapplied == 1
    assert rig.controller.finished == {WORKER} and rig.controller.in_flight == {}


def test_nothing_more_is_decided_for_a_worker_after_its_farewell(
    rig: ControllerRig, signal: SignalFactory
) -> None:
    worker = rig.speaker(WORKER)
    farewell = WorkerHello(worker_id=WORKER, last_applied_sequence=0, finished=True)
    worker.publish(Channel.ACK, farewell, WORKER)
    rig.wait(lambda: rig.controller.finished or None, "the farewell")
    # A plateau in an empty slot, for the finished worker and for one still running (a
    # signal that was on its way, say): only the running one is commanded.
    for sender in (WORKER, "w2"):
        rig.controller.loop.submit(sender, SLOT, signal(epoch=8, plateau_epochs=4))
    rig.wait(lambda: rig.controller.issued or None, "a decision")

    assert [(w, s) for w, s, *_ in rig.journal.entries()] == [(WORKER, 1), ("w2", 1)]


def _finishing_worker(rig: ControllerRig, data_dir: Path) -> Worker:
    """A real worker with the rig's command queued, not applied: the test drives its node."""
    worker = rig.worker(data_dir)
    rig.workers.remove(worker)  # pumped by the test from here on (the rig still closes it)
    worker.hello()
    rig.wait(lambda: worker.node.pump(0.001) or worker.due or None, "the command to reach it")
    return worker


def _finish(rig: ControllerRig, worker: Worker) -> bool:
    """`worker.finish` on a thread while the rig runs the controller; what it returned."""
    answered: list[bool] = []
    finishing = threading.Thread(target=lambda: answered.append(worker.finish(TIMEOUT_S)))
    finishing.start()
    rig.wait(lambda: (not finishing.is_alive()) or None, "the farewell's answer")
    finishing.join()
    return answered[0]


def test_a_finishing_worker_applies_what_is_due_and_exits_once_its_farewell_is_answered(
    tmp_path: Path,
) -> None:
    rig = ControllerRig(tmp_path, [_germinate()])
    try:
        worker = _finishing_worker(rig, tmp_path / "worker")

        assert _finish(rig, worker) is True
        assert rig.outcomes() == ["APPLIED"] and worker.ledger.last_applied == 1
        assert rig.controller.finished == {WORKER} and rig.controller.unapplied == 0
        # A command that reaches it after the farewell is not applied.
        late = AdaptationCommand(
            command_id=new_id(), command_type=CommandType.REQUEST_STATE, sequence=2
        )
        rig.node.publish(Channel.CMD, late, scope=WORKER)
        rig.wait(lambda: worker.node.pump(0.005) or worker.after_farewell or None, "the late one")
        assert worker.ledger.last_applied == 1 and worker.due == []
    finally:
        rig.close()


def test_an_unanswered_farewell_times_out_and_is_heard_once_the_controller_listens(
    tmp_path: Path,
) -> None:
    rig = ControllerRig(tmp_path, [_germinate()])
    try:
        worker = _finishing_worker(rig, tmp_path / "worker")
        # The controller hears nothing while the worker finishes (as across a partition).
        assert worker.finish(timeout_s=2.5) is False
        assert worker.ledger.last_applied == 1

        rig.wait(lambda: rig.controller.finished or None, "the farewells, once heard")
        assert rig.outcomes() == ["APPLIED"] and rig.controller.in_flight == {}
    finally:
        rig.close()


def test_an_answer_that_comes_before_the_worker_finished_is_not_its_farewells(
    tmp_path: Path,
) -> None:
    rig = ControllerRig(tmp_path, [_germinate()])
    try:
        worker = _finishing_worker(rig, tmp_path / "worker")
        received = worker.node.subscriber.metrics.received
        before = received[Channel.CMD]
        # The controller's answer, early (one to an earlier life of this id, say): it names
        # the worker's last applied sequence, 0, as an answer to a farewell now would.
        early = WorkerHello(worker_id=WORKER, last_applied_sequence=0, finished=True)
        rig.node.publish(Channel.CMD, early, scope=WORKER)
        rig.wait(lambda: worker.node.pump(0.005) or received[Channel.CMD] > before or None, "it")

        assert worker.farewell_answered is False and worker.finished is False
        assert _finish(rig, worker) is True  # by the answer to the farewell it said: through 1
        assert rig.outcomes() == ["APPLIED"] and worker.ledger.last_applied == 1
    finally:
        rig.close()
