"""Which refused payloads name a command the worker must answer, and which name nothing."""

from __future__ import annotations

import msgspec
import pytest

from bus import Rejection
from leyline import AckOutcome, AdaptationCommand, CommandAck, CommandType, RejectReason
from leyline.wire import encode
from services.worker.ledger import attribute

ALPHA = AdaptationCommand(
    command_id="c-7", command_type=CommandType.SET_ALPHA, target_slot_id="s", alpha_value=0.5
)


def _refused(payload: bytes) -> Rejection:
    return Rejection(
        reason=RejectReason.INVALID_VALUE,
        sender="controller",
        topic="cmd.w1.",
        detail="Expected `float` <= 1.0",
        path="$.alpha_value",
        payload=payload,
    )


def _payload(**changes: object) -> bytes:
    raw = msgspec.to_builtins(msgspec.structs.replace(ALPHA, sequence=3))
    raw.update(changes)
    return msgspec.msgpack.encode({k: v for k, v in raw.items() if v is not None})


def test_a_refused_command_is_named_by_its_id_type_and_sequence() -> None:
    refused = attribute(_refused(_payload(alpha_value=5.0)))

    assert refused is not None
    assert (refused.command_id, refused.command_type, refused.sequence) == (
        "c-7",
        CommandType.SET_ALPHA,
        3,
    )
    assert refused.reason == "invalid_value"
    assert refused.detail == "Expected `float` <= 1.0 (at $.alpha_value)"


@pytest.mark.parametrize(
    "payload",
    [
        _payload(command_id=None),  # no id: never invented
        _payload(command_id="x" * 129),
        _payload(sequence=None),  # no journal sequence: nothing to account for
        _payload(command_type=99),
        _payload(type="CommandAck.v1"),  # not a command at all
        encode(
            CommandAck(
                command_id="c-7",
                worker_id="w1",
                outcome=AckOutcome.APPLIED,
                command_type=CommandType.CULL,
                sequence=3,
            )
        ),  # an ack on `cmd`
        b"\xc1 not msgpack",
        msgspec.msgpack.encode([1, 2, 3]),
    ],
    ids=["no-id", "long-id", "no-sequence", "bad-type", "ack-tag", "an-ack", "junk", "array"],
)
def test_a_payload_that_names_no_command_is_left_to_the_bus(payload: bytes) -> None:
    assert attribute(_refused(payload)) is None
