"""Bus traffic in an MCAP file: one channel per (topic, contract), JSON Schema and JSON.

Why JSON and not the wire's msgpack: MCAP readers (Foxglove, `mcap cat`, the `mcap` package)
decode `json` messages against a `jsonschema` schema by themselves, and Leyline already has
the JSON Schema of every contract (`leyline schema export`). msgspec writes and reads both
encodings from one Struct definition, so a message read back is the message recorded, field
for field, and a recording does not depend on the wire format's version.

Each MCAP message is `{"header": {...}, "message": {...}}`: the bus header (sender,
incarnation, sequence, sent_ns, correlation_id) beside the contract's own JSON (array-like
contracts stay arrays, as their schema says; `x-fields` names the positions). An MCAP
message's `log_time` is when the recorder received it, `publish_time` the header's `sent_ns`,
`sequence` the header's sequence (modulo 2**32, MCAP's width). The topic reads
`<channel>/<scope>/<Contract>`; the channel's metadata holds the bus topic and the tag.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import msgspec
from mcap.reader import make_reader
from mcap.writer import Writer

from bus import Channel, Envelope
from bus.topics import parse_topic
from leyline.registry import tag_of
from leyline.schema import export
from leyline.wire import REGISTRY

#: The MCAP profile field: not one of the registered ones (ros1, ros2).
PROFILE = "leyline"
#: Metadata record written last: what the recorder saw besides the messages.
SUMMARY_METADATA = "leyline.recording"


class RecordedHeader(msgspec.Struct, frozen=True, kw_only=True):
    """The bus header of a recorded message."""

    sender: str
    incarnation: int
    sequence: int
    sent_ns: int
    correlation_id: str | None = None


class RecordedMessage(msgspec.Struct, frozen=True, kw_only=True):
    """One message read back from a recording."""

    channel: Channel
    scope: str
    topic: str
    header: RecordedHeader
    message: Any
    log_time_ns: int


class _Stored(msgspec.Struct, frozen=True):
    header: RecordedHeader
    message: msgspec.Raw


_HEADER_SCHEMA = {
    "type": "object",
    "description": "The bus header: who sent the message, in what order, and when.",
    "properties": {
        "sender": {"type": "string"},
        "incarnation": {"type": "integer", "description": "sender start time (ns)"},
        "sequence": {"type": "integer", "description": "per (sender, topic), from 1"},
        "sent_ns": {"type": "integer", "description": "send time, ns since the Unix epoch"},
        "correlation_id": {"type": ["string", "null"]},
    },
    "required": ["sender", "incarnation", "sequence", "sent_ns"],
}


def message_schemas() -> dict[str, bytes]:
    """Per tag, the JSON Schema of a recorded message: the header and the contract inline."""
    document = export()
    components = document["$defs"]
    schemas = {}
    for tag, root in document["tags"].items():
        name = root["$ref"].rsplit("/", 1)[1]
        schema = {
            "$schema": document["$schema"],
            "title": tag,
            "type": "object",
            "properties": {"header": _HEADER_SCHEMA, "message": copy.deepcopy(components[name])},
            "required": ["header", "message"],
            "$defs": components,
        }
        schemas[tag] = json.dumps(schema, sort_keys=True).encode()
    return schemas


class RecordingWriter:
    """Writes delivered messages into an MCAP file; `close` writes the summary and index."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._file: IO[bytes] = self.path.open("wb")
        self._writer = Writer(self._file)
        self._writer.start(profile=PROFILE, library="leyline")
        self._schemas = message_schemas()
        self._schema_ids: dict[str, int] = {}
        self._channels: dict[tuple[bytes, str], int] = {}
        self._encoder = msgspec.json.Encoder()
        self.messages = 0

    def write(self, envelope: Envelope[Any], log_time_ns: int) -> None:
        message = envelope.message
        tag = tag_of(type(message))
        channel_id = self._channels.get((envelope.topic, tag))
        if channel_id is None:
            channel_id = self._channel(envelope, tag)
        header = envelope.header
        stored = RecordedHeader(
            sender=header.sender,
            incarnation=header.incarnation,
            sequence=header.sequence,
            sent_ns=header.sent_ns,
            correlation_id=header.correlation_id,
        )
        data = self._encoder.encode(_Stored(stored, msgspec.Raw(self._encoder.encode(message))))
        self._writer.add_message(
            channel_id,
            log_time=log_time_ns,
            data=data,
            publish_time=header.sent_ns,
            sequence=header.sequence & 0xFFFFFFFF,
        )
        self.messages += 1

    def _channel(self, envelope: Envelope[Any], tag: str) -> int:
        schema_id = self._schema_ids.get(tag)
        if schema_id is None:
            schema_id = self._writer.register_schema(tag, "jsonschema", self._schemas[tag])
            self._schema_ids[tag] = schema_id
        name = tag.split(".v", 1)[0]
        channel_id = self._writer.register_channel(
            f"{envelope.channel.value}/{envelope.scope}/{name}",
            "json",
            schema_id,
            {"bus_topic": envelope.topic.decode(), "tag": tag},
        )
        self._channels[(envelope.topic, tag)] = channel_id
        return channel_id

    def close(self, summary: dict[str, str]) -> None:
        """Write `summary` as the recording's metadata, then the index; the file is complete."""
        self._writer.add_metadata(SUMMARY_METADATA, summary)
        self._writer.finish()  # type: ignore[no-untyped-call]
        self._file.close()


def read_recording(path: str | Path) -> Iterator[RecordedMessage]:
    """Every message of a Leyline recording, in the order it was sent (header `sent_ns`)."""
    decoders: dict[str, msgspec.json.Decoder[Any]] = {}
    stored = msgspec.json.Decoder(_Stored)
    found: list[RecordedMessage] = []
    with Path(path).open("rb") as file:
        for _, channel, record in make_reader(file).iter_messages(log_time_order=True):
            tag = channel.metadata["tag"]
            decoder = decoders.get(tag)
            if decoder is None:
                decoder = decoders[tag] = msgspec.json.Decoder(REGISTRY.entries()[tag].cls)
            item = stored.decode(record.data)
            bus_topic = channel.metadata["bus_topic"]
            kind, scope = parse_topic(bus_topic.encode())
            found.append(
                RecordedMessage(
                    channel=kind,
                    scope=scope,
                    topic=bus_topic,
                    header=item.header,
                    message=decoder.decode(item.message),
                    log_time_ns=record.log_time,
                )
            )
    found.sort(key=lambda m: (m.header.sent_ns, m.log_time_ns))
    return iter(found)


def recording_summary(path: str | Path) -> dict[str, str]:
    """The recorder's summary metadata ({} when the file has none)."""
    with Path(path).open("rb") as file:
        for metadata in make_reader(file).iter_metadata():
            if metadata.name == SUMMARY_METADATA:
                return dict(metadata.metadata)
    return {}
