"""`leyline schema asyncapi`: a document the official AsyncAPI 3.0.0 JSON Schema accepts."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from referencing import Registry

from bus.topics import CHANNEL_CONTRACTS, Channel
from leyline import CommandType, SeedStage
from leyline.wire import REGISTRY
from services.asyncapi import asyncapi
from services.cli import main

OFFICIAL = Path(__file__).with_name("asyncapi") / "asyncapi-3.0.0.json"


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return asyncapi()


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft7Validator:
    """The official schema, checked against its recorded checksum, resolving nothing remotely."""
    recorded = re.search(r"sha256 of \S+: (\w+)", OFFICIAL.with_name("README.md").read_text())
    assert recorded is not None
    assert hashlib.sha256(OFFICIAL.read_bytes()).hexdigest() == recorded[1]
    schema = json.loads(OFFICIAL.read_text(encoding="utf-8"))
    # An empty registry: every reference must resolve inside the file (offline, on CI too).
    return jsonschema.Draft7Validator(schema, registry=Registry())


def test_the_document_is_valid_asyncapi_3(
    document: dict[str, Any], validator: jsonschema.Draft7Validator
) -> None:
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(document)]
    assert errors == []
    assert document["asyncapi"] == "3.0.0"


def test_the_validator_refuses_what_asyncapi_3_forbids(
    document: dict[str, Any], validator: jsonschema.Draft7Validator
) -> None:
    """The official schema reaches into operations and payload schemas, so the pass means it."""
    broken = json.loads(json.dumps(document))
    broken["operations"]["worker.receive.cmd"]["action"] = "subscribe"  # AsyncAPI 2 wording
    payload = broken["components"]["schemas"]["TelemetryEvent"]["properties"]["payload"]
    payload["discriminator"] = {"propertyName": "kind"}  # OpenAPI's form, not AsyncAPI's
    assert len(list(validator.iter_errors(broken))) == 2


def test_every_channel_carries_its_contracts_on_a_scope_parameter(
    document: dict[str, Any],
) -> None:
    for channel in Channel:
        described = document["channels"][channel.value]
        assert described["address"] == f"{channel.value}.{{scope}}."
        assert set(described["parameters"]) == {"scope"}
        carried = {cls.__name__ for cls in CHANNEL_CONTRACTS[channel]} | {"Ready"}
        if channel is Channel.CMD:  # every publisher's one heartbeat: `cmd.*.`
            carried.add("Heartbeat")
        assert set(described["messages"]) == carried


def test_every_tag_is_a_message_with_its_schema(document: dict[str, Any]) -> None:
    messages = document["components"]["messages"]
    assert set(messages) == set(REGISTRY.entries())
    command = messages["AdaptationCommand.v2"]
    assert command["payload"] == {"$ref": "#/components/schemas/AdaptationCommand"}
    fields = document["components"]["schemas"]["AdaptationCommand"]["properties"]
    assert fields["command_type"] == {"$ref": "#/components/schemas/CommandType", "default": 1}


def test_enums_carry_their_member_names_beside_the_wire_values(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    for cls in (CommandType, SeedStage):
        described = schemas[cls.__name__]
        named = dict(zip(described["x-enum-varnames"], described["enum"], strict=True))
        assert named == {member.name: member.value for member in cls}
    assert all("x-enum-varnames" in s for s in schemas.values() if "enum" in s and "title" in s)


def test_operations_say_who_sends_and_receives_each_channel(document: dict[str, Any]) -> None:
    operations = document["operations"]
    sends = {name for name, op in operations.items() if op["action"] == "send"}
    assert {"controller.send.cmd", "worker.send.sig", "worker.send.ack"} <= sends
    assert "sink.receive.tel" in operations and "worker.receive.cmd" in operations
    assert not any(name.startswith("sink.send.") for name in sends - {"sink.send.replay"})


def test_every_reference_in_the_document_resolves(document: dict[str, Any]) -> None:
    def refs(node: Any) -> list[str]:
        if isinstance(node, dict):
            own = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
            return own + [ref for value in node.values() for ref in refs(value)]
        if isinstance(node, list):
            return [ref for item in node for ref in refs(item)]
        return []

    found = refs(document)
    assert len(found) > 50
    for ref in found:
        target: Any = document
        assert ref.startswith("#/"), ref
        for part in ref[2:].split("/"):
            assert part in target, f"{ref} does not resolve"
            target = target[part]


def test_the_command_prints_the_document(
    document: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["schema", "asyncapi"]) == 0
    assert json.loads(capsys.readouterr().out) == document
