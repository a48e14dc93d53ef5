"""TelemetryEvent.v2: failure and violation reasons are AckReasons (str on the wire); v1 lifted."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

import leyline.wire
from leyline import AckReason, ContractError, RejectReason, TelemetryEvent, TelemetryEventType
from leyline.telemetry import CommandFailed, ContractViolation

_T = TelemetryEventType


def v1_event(event_type: TelemetryEventType, payload: dict[str, Any]) -> bytes:
    body = {"type": "TelemetryEvent.v1", "event_type": int(event_type), "payload": payload}
    return msgspec.msgpack.encode(body)


def failed(reason: str) -> dict[str, Any]:
    return {"kind": "CommandFailed", "command_id": "c-1", "command_type": "CULL", "reason": reason}


def violation(reason: str) -> dict[str, Any]:
    return {"kind": "ContractViolation", "reason": reason, "sender": "ctl", "topic": "cmd.w1."}


def test_the_reasons_travel_as_their_string_values() -> None:
    event = TelemetryEvent(
        event_type=_T.COMMAND_FAILED,
        payload=CommandFailed(command_id="c-1", command_type="CULL", reason=AckReason.GATE_FAILED),
    )
    raw = msgspec.msgpack.decode(leyline.wire.encode(event))
    assert (raw["type"], raw["payload"]["reason"]) == ("TelemetryEvent.v2", "gate_failed")
    decoded = leyline.wire.decode(leyline.wire.encode(event))
    assert isinstance(decoded, TelemetryEvent)
    assert isinstance(decoded.payload, CommandFailed)
    assert decoded.payload.reason is AckReason.GATE_FAILED


@pytest.mark.parametrize(
    ("event_type", "payload", "cls"),
    [
        (_T.COMMAND_FAILED, failed("illegal_transition"), CommandFailed),
        (_T.CONTRACT_VIOLATION, violation("forged_sender"), ContractViolation),
    ],
)
def test_a_v1_event_is_lifted_with_its_reason_as_the_enum(
    event_type: TelemetryEventType, payload: dict[str, Any], cls: type[msgspec.Struct]
) -> None:
    event = leyline.wire.decode(v1_event(event_type, payload))
    assert isinstance(event, TelemetryEvent)
    assert type(event.payload) is cls
    assert event.payload.reason is AckReason(payload["reason"])  # type: ignore[attr-defined]


def test_a_v1_event_without_a_reason_is_lifted_unchanged() -> None:
    payload = {"kind": "PlateauDetected", "plateau_epochs": 4}
    event = leyline.wire.decode(v1_event(_T.PLATEAU_DETECTED, payload))
    assert isinstance(event, TelemetryEvent)
    assert msgspec.structs.asdict(event.payload) == {"plateau_epochs": 4}


@pytest.mark.parametrize("payload", [failed("because"), violation("BAD_HEADER")])
def test_a_v1_reason_no_enum_names_is_refused_at_its_path(payload: dict[str, Any]) -> None:
    event_type = _T.COMMAND_FAILED if payload["kind"] == "CommandFailed" else _T.CONTRACT_VIOLATION
    with pytest.raises(ContractError) as caught:
        leyline.wire.decode(v1_event(event_type, payload))
    assert (caught.value.reason, caught.value.path) == (
        RejectReason.INVALID_VALUE,
        "$.payload.reason",
    )


def test_a_v1_event_with_the_wrong_payload_for_its_type_is_refused() -> None:
    with pytest.raises(ContractError) as caught:
        leyline.wire.decode(v1_event(_T.CONTRACT_VIOLATION, failed("stale")))
    assert caught.value.reason is RejectReason.INVALID_VALUE


def test_a_v2_event_with_a_free_string_reason_is_refused() -> None:
    body = msgspec.msgpack.decode(v1_event(_T.COMMAND_FAILED, failed("because")))
    body["type"] = "TelemetryEvent.v2"
    with pytest.raises(ContractError) as caught:
        leyline.wire.decode(msgspec.msgpack.encode(body))
    assert caught.value.reason is RejectReason.INVALID_VALUE
