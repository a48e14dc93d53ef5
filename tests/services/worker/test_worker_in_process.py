"""The real Worker and the real Controller on `InProcessBus`: no ports, the same pipeline.

`Node` takes the bus it builds its endpoints from, so the digits worker and the controller
run in the test's own process; the test pumps them in turn.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
import torch
from torch import nn
from worker_helpers import TwoSlotNet

from bus import Channel, Envelope
from bus.testing import InProcessBus
from leyline import (
    AckOutcome,
    AdaptationCommand,
    CommandAck,
    CommandType,
    FastTrainingSignals,
    SeedStage,
    new_id,
)
from services.controller.heuristic import HeuristicPolicy
from services.controller.inference import InferenceLoop
from services.controller.journal import CommandJournal
from services.controller.layout import ActionLayout
from services.controller.process import Controller
from services.node import Node
from services.worker import (
    Agent,
    Checkpoint,
    DataSplit,
    Seeds,
    Trainer,
    WorkerModel,
    worker_node,
)
from services.worker.process import Worker

T = TypeVar("T")
TIMEOUT_S = 15.0  # bounds a hang only


@pytest.fixture
def bus() -> Iterator[InProcessBus]:
    with InProcessBus() as bus:
        yield bus


def _wait(pump: Callable[[], None], found: Callable[[], T | None]) -> T:
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        pump()
        value = found()
        if value is not None:
            return value
    raise AssertionError("timed out")


def test_the_digits_worker_applies_a_command_once_at_its_safe_point(
    bus: InProcessBus, digits: DataSplit, tmp_path: Path
) -> None:
    controller = bus.publisher("controller")
    channels = (Channel.SIG, Channel.ACK, Channel.REP, Channel.TEL)
    intake = bus.subscriber([(c, "w1") for c in channels])
    received: list[Envelope] = []
    for channel in channels:
        intake.on(channel, received.append)
    node = Node("w1", subscribe=[(Channel.CMD, "w1")], bus=bus)
    bus.connect(controller, node.subscriber)
    bus.connect(node.publisher, intake)
    worker = Worker(
        node, Trainer(WorkerModel("w1"), digits), Checkpoint(tmp_path / "w1.pt"), epochs=1
    )

    def acks() -> list[CommandAck]:
        return [e.message for e in received if isinstance(e.message, CommandAck)]

    germinate = AdaptationCommand(
        command_id=new_id(),
        command_type=CommandType.GERMINATE,
        blueprint_id="norm",
        target_slot_id="block2_post",
        sequence=1,
    )
    controller.publish(Channel.CMD, germinate, "w1")
    _wait(lambda: (node.pump(0.005), intake.poll(0)), lambda: worker.due or None)
    assert worker.model.germinations == 0  # delivered and queued, not applied between steps

    worker.safe_point(0.01)
    ack = _wait(lambda: intake.poll(5), lambda: next(iter(acks()), None))
    assert (ack.outcome, ack.sequence) == (AckOutcome.APPLIED, 1)
    assert worker.model.slots["block2_post"].stage is SeedStage.GERMINATED

    controller.publish(Channel.CMD, germinate, "w1")  # a resend: answered, never re-applied
    _wait(lambda: (worker.safe_point(0.005), intake.poll(5)), lambda: acks()[1:] or None)
    assert [a.outcome for a in acks()] == [AckOutcome.APPLIED, AckOutcome.APPLIED]
    assert worker.model.germinations == 1 and worker.ledger.last_applied == 1

    worker.farewell_timeout_s = 0.0  # the test's controller answers no farewell
    worker.run()  # one epoch: published, checkpointed

    def signals() -> list[FastTrainingSignals] | None:
        found = [e.message for e in received if isinstance(e.message, FastTrainingSignals)]
        return found if len(found) == 2 else None

    assert sorted(s.slot_index for s in _wait(lambda: intake.poll(5), signals)) == [0, 1]
    assert Checkpoint(tmp_path / "w1.pt").load() is not None


def test_the_heuristic_controller_grows_a_seed_in_a_users_model_in_process(
    bus: InProcessBus, tmp_path: Path
) -> None:
    controller_node = Node(
        "controller", subscribe=[(Channel.SIG, None), (Channel.ACK, None)], bus=bus
    )
    journal = CommandJournal(tmp_path / "journal.db")
    loop = InferenceLoop(HeuristicPolicy(ActionLayout("cnn")), device="cpu")
    controller = Controller(controller_node, loop, journal)
    torch.manual_seed(0)
    net = TwoSlotNet()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.0)  # a model on a plateau
    agent = Agent(
        worker_node("w1", bus=bus), Seeds("w1", net, optimizer=optimizer), command_window_s=0.0
    )
    assert agent.node is not None
    bus.connect(controller_node.publisher, agent.node.subscriber)
    bus.connect(agent.node.publisher, controller_node.subscriber)
    x, y = torch.randn(8, 1, 6, 6), torch.randint(0, 2, (8,))

    def epoch() -> None:
        loss = nn.functional.cross_entropy(net(x), y)
        optimizer.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]
        optimizer.step()
        agent.step()
        agent.end_epoch(train_loss=loss.item(), val_loss=loss.item(), val_accuracy=50.0)

    def answered() -> bool | None:
        controller_node.pump(0.005)
        controller.tick()
        agent.safe_point(0.005)
        return (controller.issued > 0 and not controller.in_flight) or None

    for _ in range(12):  # past the heuristic's warm-up, on a plateau: it germinates
        epoch()
        deadline = time.monotonic() + 0.2  # the controller's turn at this epoch's signals
        while time.monotonic() < deadline and not controller.issued:
            controller_node.pump(0.005)
            controller.tick()
        if controller.issued:
            break
    _wait(lambda: None, answered)
    assert controller.applied == controller.issued and controller.rejected == 0
    grown = {slot.slot_id for slot in (net.after_first, net.after_second) if slot.seed is not None}
    assert len(grown) == controller.issued  # block2_post, block3_post: the user's slots in order
    assert grown == {g["slot_id"] for g in optimizer.param_groups if g.get("slot_id")}
    assert [outcome for *_, outcome in journal.entries()] == ["APPLIED"] * controller.issued
    journal.close()


def test_a_users_agent_resumes_from_its_checkpoint_and_never_reapplies(
    bus: InProcessBus, tmp_path: Path
) -> None:
    controller = bus.publisher("controller")
    intake = bus.subscriber([(Channel.ACK, "w1")])
    acks: list[CommandAck] = []
    intake.on(Channel.ACK, lambda e: acks.append(e.message))
    checkpoint = Checkpoint(tmp_path / "mine.pt")

    def start() -> tuple[TwoSlotNet, torch.optim.Optimizer, Agent]:
        torch.manual_seed(0)
        net = TwoSlotNet()
        optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
        node = worker_node("w1", bus=bus)
        bus.connect(controller, node.subscriber)
        bus.connect(node.publisher, intake)
        return (
            net,
            optimizer,
            Agent(node, Seeds("w1", net, optimizer=optimizer), checkpoint=checkpoint),
        )

    net, _, agent = start()
    assert not agent.resumed
    germinate = AdaptationCommand(
        command_id=new_id(),
        command_type=CommandType.GERMINATE,
        blueprint_id="depthwise",
        target_slot_id="after_second",
        sequence=1,
    )
    controller.publish(Channel.CMD, germinate, "w1")
    _wait(lambda: (agent.safe_point(0.005), intake.poll(5)), lambda: acks or None)
    weights = {k: v.clone() for k, v in net.state_dict().items()}
    agent.close()  # the process dies after the ack; its checkpoint preceded the ack

    net, optimizer, agent = start()
    assert agent.resumed and agent.ledger.last_applied == 1
    assert net.after_second.stage is SeedStage.GERMINATED and net.after_second.seed is not None
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in weights.items())
    assert any(g.get("slot_id") == "after_second" for g in optimizer.param_groups)
    controller.publish(Channel.CMD, germinate, "w1")  # the controller resends: answered again
    _wait(lambda: (agent.safe_point(0.005), intake.poll(5)), lambda: acks[1:] or None)
    assert [a.outcome for a in acks] == [AckOutcome.APPLIED, AckOutcome.APPLIED]
    assert agent.seeds.germinations == 1
    agent.close()
