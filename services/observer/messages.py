"""A delivered message as a tool shows it: one readable line, or one JSON object."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgspec

from bus import Envelope
from leyline.registry import tag_of

_JSON = msgspec.json.Encoder()


def type_name(message: msgspec.Struct) -> str:
    """The message's contract name, without its major (`CommandAck`)."""
    return tag_of(type(message)).split(".v", 1)[0]


def fields_of(message: msgspec.Struct) -> dict[str, Any]:
    """The message's fields by name, JSON-ready (array-like contracts too)."""
    return {name: msgspec.to_builtins(getattr(message, name)) for name in message.__struct_fields__}


def as_json(envelope: Envelope[Any]) -> bytes:
    """Where a message came from and what it says, as one JSON object."""
    header = envelope.header
    return _JSON.encode(
        {
            "topic": envelope.topic.decode(),
            "sender": header.sender,
            "incarnation": header.incarnation,
            "sequence": header.sequence,
            "sent_ns": header.sent_ns,
            "type": tag_of(type(envelope.message)),
            "message": fields_of(envelope.message),
        }
    )


def as_line(envelope: Envelope[Any]) -> str:
    """`12:00:01.234 sig.w1. w1#42 FastTrainingSignals {...}`: time sent, topic, sender and
    sequence, type, fields."""
    header = envelope.header
    sent = datetime.fromtimestamp(header.sent_ns / 1e9, UTC).strftime("%H:%M:%S.%f")[:-3]
    body = _JSON.encode(fields_of(envelope.message)).decode()
    return (
        f"{sent} {envelope.topic.decode()} {header.sender}#{header.sequence} "
        f"{type_name(envelope.message)} {body}"
    )
