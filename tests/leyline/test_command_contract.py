"""AdaptationCommand.v2: the sender names every command, and v1 is read without inventing ids."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest

import leyline.wire
from leyline import AdaptationCommand, CommandType, ContractError, RejectReason, SeedStage
from leyline.commands import MAX_LEARNING_RATE
from leyline.registry import tag_of

WHEN = datetime(2026, 12, 2, 14, 0, 0, 123456, tzinfo=UTC)


def payload(tag: str, **fields: Any) -> bytes:
    """A command map as a peer would write it: `fields` only, None leaving a field out."""
    body = {
        "type": tag,
        "command_id": "c-1",
        "timestamp": WHEN,
        "command_type": int(CommandType.SET_LEARNING_RATE),
        "target_slot_id": "block2_post",
        "learning_rate": 1e-3,
        "sequence": 4,
    }
    body.update(fields)
    return msgspec.msgpack.encode({k: v for k, v in body.items() if v is not None})


def refusal(data: bytes) -> ContractError:
    with pytest.raises(ContractError) as caught:
        leyline.wire.decode(data)
    return caught.value


def test_the_current_major_is_v2_and_requires_its_id() -> None:
    assert tag_of(AdaptationCommand) == "AdaptationCommand.v2"
    with pytest.raises(TypeError, match="command_id"):
        AdaptationCommand(command_type=CommandType.REQUEST_STATE)  # type: ignore[call-arg]


@pytest.mark.parametrize("command_id", [None, ""], ids=["absent", "empty"])
@pytest.mark.parametrize("tag", ["AdaptationCommand.v2", "AdaptationCommand.v1"])
def test_a_command_without_an_id_is_refused_never_given_one(
    tag: str, command_id: str | None
) -> None:
    error = refusal(payload(tag, command_id=command_id))
    assert (error.reason, error.path) == (RejectReason.INVALID_VALUE, "$.command_id")
    assert tag in error.detail


def test_a_v1_command_with_an_id_is_lifted_to_v2_unchanged() -> None:
    fields: dict[str, Any] = {
        "command_id": "c-9",
        "timestamp": WHEN,
        "command_type": CommandType.ADVANCE_STAGE,
        "target_seed_id": "seed-3",
        "target_slot_id": "block3_post",
        "blueprint_id": "norm",
        "target_stage": SeedStage.BLENDING,
        "alpha_value": 0.25,
        "learning_rate": 0.5,
        "reason": "plateau",
        "confidence": 0.75,
        "risk_level": 3,
        "annotations": {"by": "operator"},
        "sequence": 12,
    }
    decoded = leyline.wire.decode(payload("AdaptationCommand.v1", **fields))

    assert type(decoded) is AdaptationCommand
    assert decoded == AdaptationCommand(**fields)
    assert msgspec.msgpack.decode(leyline.wire.encode(decoded))["type"] == "AdaptationCommand.v2"


def test_a_v1_command_keeps_its_cross_field_rules() -> None:
    error = refusal(payload("AdaptationCommand.v1", learning_rate=None))
    assert error.reason is RejectReason.INVALID_VALUE
    assert "SET_LEARNING_RATE needs a learning_rate" in error.detail


@pytest.mark.parametrize("tag", ["AdaptationCommand.v2", "AdaptationCommand.v1"])
@pytest.mark.parametrize("rate", [MAX_LEARNING_RATE * 1.01, 1e300])
def test_a_learning_rate_above_the_bound_is_refused_at_decode_with_its_path(
    tag: str, rate: float
) -> None:
    error = refusal(payload(tag, learning_rate=rate))
    assert (error.reason, error.path) == (RejectReason.INVALID_VALUE, "$.learning_rate")


@pytest.mark.parametrize("tag", ["AdaptationCommand.v2", "AdaptationCommand.v1"])
def test_the_bound_itself_is_a_valid_learning_rate(tag: str) -> None:
    decoded = leyline.wire.decode(payload(tag, learning_rate=MAX_LEARNING_RATE))
    assert isinstance(decoded, AdaptationCommand)
    assert decoded.learning_rate == MAX_LEARNING_RATE
