"""A real worker on real sockets: what the bus refused is never applied, resends are resends,
commands are judged at their turn, refusals at decode are answered, and queries cost no fsync.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest
from worker_bus import WorkerBus

from leyline import (
    AckOutcome,
    AdaptationCommand,
    CommandAck,
    CommandType,
    SeedStage,
    TelemetryEventType,
    new_id,
)
from leyline.wire import encode

C = CommandType
GROWN, OTHER = "block2_post", "block3_post"


@pytest.fixture
def bus(tmp_path: Path) -> Iterator[WorkerBus]:
    rig = WorkerBus(tmp_path)
    try:
        yield rig
    finally:
        rig.close()


def germinate(slot: str = GROWN) -> AdaptationCommand:
    return AdaptationCommand(
        command_id=new_id(), command_type=C.GERMINATE, target_slot_id=slot, blueprint_id="norm"
    )


def request_state() -> AdaptationCommand:
    return AdaptationCommand(command_id=new_id(), command_type=C.REQUEST_STATE)


@pytest.mark.parametrize("refusal", ["duplicate", "out_of_order", "stale"])
def test_a_command_the_bus_refused_is_never_applied(bus: WorkerBus, refusal: str) -> None:
    assert bus.send(germinate(), 1).outcome is AckOutcome.APPLIED
    last = bus.header_sequence
    forged = msgspec.structs.replace(germinate(OTHER), sequence=2)
    if refusal == "duplicate":
        bus.send_frames(encode(forged), header_sequence=last)
    elif refusal == "out_of_order":
        query = msgspec.structs.replace(request_state(), sequence=2)
        bus.send_frames(encode(query), header_sequence=last + 2)  # past a hole ...
        assert bus.ack_of(query.command_id).outcome is AckOutcome.APPLIED
        forged = msgspec.structs.replace(forged, sequence=3)
        bus.send_frames(encode(forged), header_sequence=last + 1)  # ... this one arrives into
    else:
        bus.send_frames(encode(forged), header_sequence=last + 1, incarnation=1)

    bus.violation(refusal)
    bus.settle()

    assert bus.acks(forged.command_id) == []
    assert bus.worker.model.slots[OTHER].stage is SeedStage.DORMANT
    assert bus.worker.model.germinations == 1


def test_a_resend_is_answered_again_and_is_no_violation(bus: WorkerBus) -> None:
    command = germinate()
    first = bus.send(command, 1)
    bus.publish(command, 1)  # the controller's resend after its ack timeout: new header sequence
    bus.wait(lambda: bus.acks(command.command_id)[1:] or None, "the second ack")

    assert bus.acks(command.command_id) == [first, first]
    assert first.outcome is AckOutcome.APPLIED
    assert bus.worker.model.germinations == 1
    assert bus.violations() == []


def test_a_command_that_waited_for_its_predecessor_is_judged_at_its_turn(bus: WorkerBus) -> None:
    alpha = AdaptationCommand(
        command_id=new_id(), command_type=C.SET_ALPHA, target_slot_id=GROWN, alpha_value=0.5
    )
    bus.publish(alpha, 2)  # ahead of the germination it needs: it waits, unjudged
    bus.settle()
    assert bus.acks(alpha.command_id) == []

    assert bus.send(germinate(), 1).outcome is AckOutcome.APPLIED
    assert bus.ack_of(alpha.command_id).outcome is AckOutcome.APPLIED
    assert bus.worker.model.slots[GROWN].alpha == 0.5
    assert bus.violations() == []


def test_a_lifecycle_refusal_is_acked_rejected_with_its_reason(bus: WorkerBus) -> None:
    cull = AdaptationCommand(command_id=new_id(), command_type=C.CULL, target_slot_id=GROWN)
    ack = bus.send(cull, 1)

    assert (ack.outcome, ack.reason) == (AckOutcome.REJECTED, "illegal_transition")
    assert "DORMANT -> CULLED" in ack.detail
    assert bus.violations() == []  # judged by the worker, not refused by the bus


def _refused_at_decode(kind: CommandType, field: str, value: float) -> tuple[str, bytes]:
    """A command whose `field` breaks its contract, as a faulty controller would encode it."""
    valid = AdaptationCommand(
        command_id=new_id(), command_type=kind, target_slot_id=GROWN, **{field: 0.5}
    )
    raw = msgspec.to_builtins(valid)
    raw[field] = value
    return valid.command_id, msgspec.msgpack.encode(raw)


@pytest.mark.parametrize(
    ("kind", "field", "value"),
    [(C.SET_ALPHA, "alpha_value", 5.0), (C.SET_LEARNING_RATE, "learning_rate", 1e300)],
)
def test_a_command_refused_at_decode_is_acked_rejected_and_blocks_nothing(
    bus: WorkerBus, kind: CommandType, field: str, value: float
) -> None:
    command_id, payload = _refused_at_decode(kind, field, value)
    raw = msgspec.msgpack.decode(payload)
    raw["sequence"] = 1
    payload = msgspec.msgpack.encode(raw)
    bus.send_frames(payload)
    ack = bus.ack_of(command_id)

    assert (ack.outcome, ack.reason, ack.sequence) == (AckOutcome.REJECTED, "invalid_value", 1)
    assert ack.command_type is kind and field in ack.detail
    failed = bus.events(TelemetryEventType.COMMAND_FAILED)
    assert [(f.command_id, f.reason) for f in failed] == [(command_id, "invalid_value")]  # type: ignore[attr-defined]
    bus.send_frames(payload)  # resent: answered the same, from the ledger
    bus.wait(lambda: bus.acks(command_id)[1:] or None, "the second ack")
    assert bus.acks(command_id) == [ack, ack]
    assert bus.send(request_state(), 2).outcome is AckOutcome.APPLIED  # not held behind it
    bus.worker.trainer.tick()  # and training goes on
    assert bus.worker.trainer.epoch == 1


@pytest.mark.parametrize("tag", ["AdaptationCommand.v2", "AdaptationCommand.v1"])
def test_a_command_without_an_id_is_refused_by_the_bus_and_never_given_one(
    bus: WorkerBus, tag: str
) -> None:
    raw = msgspec.to_builtins(msgspec.structs.replace(germinate(), sequence=1))
    del raw["command_id"]
    bus.send_frames(msgspec.msgpack.encode({**raw, "type": tag}))
    violation = bus.violation("invalid_value")

    assert (violation.path, violation.command_id) == ("$.command_id", "")
    assert tag in violation.detail
    assert bus.events(TelemetryEventType.SEED_GERMINATED) == []
    assert bus.worker.model.slots[GROWN].stage is SeedStage.DORMANT
    assert bus.worker.ledger.last_applied == 0
    assert not any(isinstance(e.message, CommandAck) for e in bus.received)  # no id to ack
    assert bus.send(germinate(), 1).outcome is AckOutcome.APPLIED  # sequence 1 still free


def test_a_command_without_a_journal_sequence_is_refused(bus: WorkerBus) -> None:
    command = germinate()
    ack = bus.send(command, 0)

    assert (ack.outcome, ack.reason) == (AckOutcome.REJECTED, "invalid_value")
    assert bus.worker.model.slots[GROWN].stage is SeedStage.DORMANT
    assert bus.worker.ledger.last_applied == 0
    bus.publish(command, 1)  # the refusal was not remembered: the journaled one is applied
    second = bus.wait(lambda: bus.acks(command.command_id)[1:] or None, "the second ack")
    assert second[0].outcome is AckOutcome.APPLIED


def test_a_state_query_is_answered_without_a_checkpoint(bus: WorkerBus) -> None:
    assert bus.send(germinate(), 1).outcome is AckOutcome.APPLIED
    written = bus.checkpoint.path.stat().st_ino
    for sequence in range(2, 12):
        assert bus.send(request_state(), sequence).outcome is AckOutcome.APPLIED
    assert bus.checkpoint.path.stat().st_ino == written  # not rewritten once

    assert bus.send(germinate(OTHER), 12).outcome is AckOutcome.APPLIED
    assert bus.checkpoint.path.stat().st_ino != written
    assert bus.worker.ledger.last_applied == 12
