"""The bus as an AsyncAPI 3.0 document: channels, what each service sends and receives, messages.

Channels and their contracts come from `bus.topics`, payload schemas from the schema export
(`leyline.schema.export`), so the document cannot drift from the code. The export is JSON
Schema 2020-12; AsyncAPI's default schema format is a superset of draft 07, so three spellings
are translated: `$defs` references point into `components/schemas`, `prefixItems` becomes the
draft 07 tuple `items`, and OpenAPI's discriminator object becomes AsyncAPI's property name.
Enums keep their wire values and carry their member names as `x-enum-varnames`.
"""

from __future__ import annotations

from typing import Any

from bus.topics import CHANNEL_CONTRACTS, Channel
from leyline import LEYLINE_VERSION, Heartbeat, Ready, ReplayDone, ReplayRequest
from leyline.registry import tag_of
from leyline.schema import export
from leyline.wire import REGISTRY
from services.sink.daemon import AUDITED

Document = dict[str, Any]

#: What the payload bytes are: the tagged msgpack encoding of the schema's structure.
CONTENT_TYPE = "application/x-msgpack"
#: The channels each service publishes on and subscribes to, as the services wire them.
ROLES: dict[str, tuple[tuple[Channel, ...], tuple[Channel, ...]]] = {
    "controller": ((Channel.CMD, Channel.TEL), (Channel.SIG, Channel.ACK, Channel.REP)),
    "worker": ((Channel.SIG, Channel.ACK, Channel.TEL, Channel.REP), (Channel.CMD,)),
    "sink": ((), AUDITED),
}
#: The channel-level control message, sent on the scope `*` of every channel; heartbeats,
#: one per publisher for all its channels, go on `cmd.*.` only (`bus.topics.HEARTBEAT_TOPIC`).
CONTROL = (Ready,)
#: The replay exchange: a subscriber asks a publisher's window for what it missed.
REPLAY = (ReplayRequest, ReplayDone)

_DESCRIPTIONS = {
    Channel.CMD: "Commands from the controller to one worker; the scope is the worker's id.",
    Channel.SIG: "Fast training signals, one per seed slot per epoch; the scope is the worker.",
    Channel.ACK: "Each worker's answer to every command, and its hello on (re)start.",
    Channel.TEL: "Telemetry events of every service; the scope is the sender.",
    Channel.REP: "Seed state reports, field reports and full signals; the scope is the worker.",
}
_SUMMARIES = {
    ("worker", "receive", Channel.CMD): "Each worker subscribes to `cmd.<its id>.` only.",
    ("sink", "receive", Channel.CMD): "The sink records every command for audit.",
}
_SCOPE = {
    "description": (
        "1-64 of [A-Za-z0-9_-:]: the worker a message is about or addressed to, or `*` for "
        "the channel's control messages (Ready; on `cmd`, every publisher's Heartbeat too)."
    ),
    "examples": ["w1", "controller", "*"],
}


def asyncapi() -> Document:
    """The AsyncAPI 3.0.0 document of the bus as this version of leyline speaks it."""
    schema = export()
    components = {name: _translate(body) for name, body in schema["$defs"].items()}
    channels: Document = {
        channel.value: _channel(
            channel,
            [
                *CHANNEL_CONTRACTS[channel],
                *CONTROL,
                *((Heartbeat,) if channel is Channel.CMD else ()),
            ],
        )
        for channel in Channel
    }
    channels["replay"] = {
        "address": None,
        "title": "replay",
        "description": (
            "Request and answer with a publisher's replay endpoint (ZeroMQ DEALER to ROUTER): "
            "the missed messages come back as sent, then a ReplayDone."
        ),
        "messages": {cls.__name__: _message_ref(cls) for cls in REPLAY},
    }
    messages = {
        tag: _message(tag, entry.cls, schema["tags"][tag])
        for tag, entry in sorted(REGISTRY.entries().items())
    }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "Leyline bus",
            "version": LEYLINE_VERSION,
            "description": (
                "Typed, enforced pub/sub for training control over ZeroMQ. A message is three "
                "frames: topic `<channel>.<scope>.`, a msgpack header (wire version, sender, "
                "sequence, send time), and the tagged msgpack payload described here."
            ),
        },
        "defaultContentType": CONTENT_TYPE,
        "channels": channels,
        "operations": _operations(),
        "components": {"schemas": components, "messages": messages},
    }


def _channel(channel: Channel, contracts: list[type]) -> Document:
    return {
        "address": f"{channel.value}.{{scope}}.",
        "title": channel.value,
        "description": _DESCRIPTIONS[channel],
        "parameters": {"scope": _SCOPE},
        "messages": {cls.__name__: _message_ref(cls) for cls in contracts},
    }


def _operations() -> Document:
    operations: Document = {}
    for role, (sends, receives) in ROLES.items():
        for action, channels in (("send", sends), ("receive", receives)):
            for channel in channels:
                operations[f"{role}.{action}.{channel.value}"] = {
                    "action": action,
                    "channel": {"$ref": f"#/channels/{channel.value}"},
                    "summary": _SUMMARIES.get((role, action, channel))
                    or f"The {role} {action}s on `{channel.value}`.",
                }
    replay = {"$ref": "#/channels/replay"}
    operations["sink.send.replay"] = {
        "action": "send",
        "channel": replay,
        "summary": "The sink asks a publisher's window for the messages of a gap.",
        "messages": [{"$ref": "#/channels/replay/messages/ReplayRequest"}],
    }
    for role in ("controller", "worker"):
        operations[f"{role}.receive.replay"] = {
            "action": "receive",
            "channel": replay,
            "summary": f"The {role}'s replay endpoint answers with what it still holds.",
            "messages": [{"$ref": "#/channels/replay/messages/ReplayRequest"}],
            "reply": {
                "channel": replay,
                "messages": [{"$ref": "#/channels/replay/messages/ReplayDone"}],
            },
        }
    return operations


def _message_ref(cls: type) -> Document:
    return {"$ref": f"#/components/messages/{tag_of(cls)}"}


def _message(tag: str, cls: type, root: Document) -> Document:
    summary = (cls.__doc__ or "").strip().splitlines()
    return {
        "name": cls.__name__,
        "title": tag,
        **({"summary": summary[0]} if summary else {}),
        "contentType": CONTENT_TYPE,
        "payload": _translate(root),
    }


def _translate(node: Any) -> Any:
    """A 2020-12 schema from the export in AsyncAPI's (draft 07) spelling; see the module doc."""
    if isinstance(node, list):
        return [_translate(item) for item in node]
    if not isinstance(node, dict):
        return node
    out: Document = {}
    for key, value in node.items():
        if key == "$ref":
            out[key] = value.replace("#/$defs/", "#/components/schemas/")
        elif key == "prefixItems":
            out["items"] = _translate(value)
            if "items" in node:
                out["additionalItems"] = _translate(node["items"])
        elif key == "items" and "prefixItems" in node:
            continue
        elif key == "discriminator":
            out[key] = value["propertyName"]
        elif key in ("properties", "patternProperties"):
            out[key] = {name: _translate(field) for name, field in value.items()}
        elif key in ("default", "enum", "const", "examples"):
            out[key] = value
        else:
            out[key] = _translate(value)
    members = node.get("oneOf")
    if isinstance(members, list) and members and all("const" in m for m in members):
        # The export's enum (one titled const per member) as codegen tools read it best.
        del out["oneOf"]
        out["enum"] = [member["const"] for member in members]
        out["x-enum-varnames"] = [member.get("title", "") for member in members]
    return out
