"""CommandAck.v2: the reason is an AckReason, a string on the wire; v1 acks are lifted to it."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

import leyline.wire
from leyline import AckOutcome, AckReason, CommandAck, CommandType, ContractError, RejectReason


def v1_ack(**fields: Any) -> bytes:
    body = {
        "type": "CommandAck.v1",
        "command_id": "c-1",
        "worker_id": "w1",
        "outcome": int(AckOutcome.REJECTED),
        "command_type": int(CommandType.CULL),
        "sequence": 3,
    }
    body.update(fields)
    return msgspec.msgpack.encode(body)


def test_every_bus_refusal_is_an_ack_reason_by_its_name() -> None:
    for reject in RejectReason:
        assert AckReason[reject.name].value == reject.name.lower()


def test_the_reason_travels_as_its_string_value() -> None:
    ack = CommandAck(
        command_id="c-1",
        worker_id="w1",
        outcome=AckOutcome.REJECTED,
        command_type=CommandType.CULL,
        reason=AckReason.GATE_FAILED,
    )
    raw = msgspec.msgpack.decode(leyline.wire.encode(ack))
    assert (raw["type"], raw["reason"]) == ("CommandAck.v2", "gate_failed")
    assert leyline.wire.decode(leyline.wire.encode(ack)).reason is AckReason.GATE_FAILED


def test_an_applied_ack_leaves_the_reason_out() -> None:
    ack = CommandAck(
        command_id="c-1", worker_id="w1", outcome=AckOutcome.APPLIED, command_type=CommandType.CULL
    )
    assert "reason" not in msgspec.msgpack.decode(leyline.wire.encode(ack))
    assert leyline.wire.decode(leyline.wire.encode(ack)).reason is AckReason.NONE


@pytest.mark.parametrize("reason", ["illegal_transition", "invalid_value", ""])
def test_a_v1_ack_is_lifted_to_v2_with_its_reason_as_the_enum(reason: str) -> None:
    ack = leyline.wire.decode(v1_ack(reason=reason))
    assert isinstance(ack, CommandAck)
    assert ack.reason is AckReason(reason)
    assert (ack.command_id, ack.sequence, ack.outcome) == ("c-1", 3, AckOutcome.REJECTED)


def test_a_v1_ack_with_a_reason_no_enum_names_is_refused_at_its_path() -> None:
    with pytest.raises(ContractError) as caught:
        leyline.wire.decode(v1_ack(reason="because"))
    assert (caught.value.reason, caught.value.path) == (RejectReason.INVALID_VALUE, "$.reason")


def test_a_v2_ack_with_a_free_string_reason_is_refused() -> None:
    body = msgspec.msgpack.decode(v1_ack(reason="because"))
    body["type"] = "CommandAck.v2"
    with pytest.raises(ContractError) as caught:
        leyline.wire.decode(msgspec.msgpack.encode(body))
    assert caught.value.reason is RejectReason.INVALID_VALUE
