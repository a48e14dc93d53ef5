"""The wire, version 2: a message, or a batch of messages to one topic, in one ZeroMQ frame.

    topic | 0x00 | fixed header | sender | correlation id | body

- topic: `<channel>.<scope>.` in ASCII, first, so ZeroMQ's prefix subscriptions still select;
- fixed header, `struct` "<BBHBBQQQ" (30 bytes, little-endian): wire version, flags (0),
  count (messages in the body), sender length, correlation id length, incarnation, sequence
  of the first message, send time in ns;
- sender and correlation id: UTF-8, of the lengths given;
- body: with count 1 the message's msgpack; with count N > 1 a msgpack array of N messages,
  sequences `sequence` .. `sequence + N - 1`, all sent at `sent_ns` (the first one's time).

One frame means one receive and a handful of slicing calls per frame instead of three
receives, two `RCVMORE` checks and a msgpack header decode per message; a batch pays the
frame's costs once for all its messages (docs/protocol.md §3).
"""

from __future__ import annotations

import struct
from typing import Annotated

import msgspec

from leyline import ContractError, RejectReason

WIRE_VERSION = 2
TERMINATOR = b"\x00"
#: version, flags, count, sender length, correlation id length, incarnation, sequence, sent_ns
FIXED = struct.Struct("<BBHBBQQQ")
#: A topic is `<channel>.<scope>.`: at most 3 + 1 + 64 + 1 bytes; the terminator follows.
MAX_TOPIC_BYTES = 72
MAX_SENDER_BYTES = 64
MAX_CORRELATION_BYTES = 128
#: The most messages one frame may carry (the publisher sends far fewer, bus/publisher.py).
MAX_BATCH = 4096
U63 = 2**63 - 1

_U63 = Annotated[int, msgspec.Meta(ge=0, le=U63)]
_Sender = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_SENDER_BYTES)]
_pack = FIXED.pack
_unpack = FIXED.unpack_from
_FIXED_BYTES = FIXED.size


class Header(msgspec.Struct, array_like=True, frozen=True, gc=False):
    """Wire version, sender id, sender incarnation, per-topic sequence, send time (ns).

    `incarnation` changes whenever the sender process restarts, so a subscriber can tell a
    restart (sequence starts over) from duplicates or a gap.
    """

    wire_version: int
    sender: _Sender
    incarnation: _U63
    sequence: _U63
    sent_ns: _U63
    correlation_id: str | None = None


def encode_head(
    sender: bytes,
    incarnation: int,
    sequence: int,
    sent_ns: int,
    count: int = 1,
    correlation: bytes = b"",
) -> bytes:
    """The fixed header, sender and correlation id: what sits between topic and body."""
    return (
        _pack(WIRE_VERSION, 0, count, len(sender), len(correlation), incarnation, sequence, sent_ns)
        + sender
        + correlation
    )


def encode_frame(topic: bytes, header: Header, body: bytes, count: int = 1) -> bytes:
    """One whole frame (tests, tools and replays; the publisher builds its own faster)."""
    correlation = (header.correlation_id or "").encode()
    head = encode_head(
        header.sender.encode(),
        header.incarnation,
        header.sequence,
        header.sent_ns,
        count,
        correlation,
    )
    return b"".join((topic, TERMINATOR, head, body))


def array_prefix(count: int) -> bytes:
    """The msgpack array header that makes `count` concatenated messages one batch body."""
    if count < 16:
        return bytes((0x90 | count,))
    return b"\xdc" + count.to_bytes(2, "big")


def count_of(frame: bytes) -> int:
    """How many messages a frame says it carries (1 when it says nothing readable): for
    counting what is relayed, not for trusting."""
    end = frame.find(TERMINATOR, 0, MAX_TOPIC_BYTES + 1)
    if end < 0 or len(frame) < end + 1 + _FIXED_BYTES:
        return 1
    return max(1, int(_unpack(frame, end + 1)[2]))


def split_topic(frame: bytes) -> tuple[bytes, int]:
    """The topic and where the fixed header starts, or `ContractError(BAD_TOPIC)`."""
    end = frame.find(TERMINATOR, 0, MAX_TOPIC_BYTES + 1)
    if end < 0:
        raise ContractError(
            RejectReason.BAD_TOPIC, f"no topic terminator in the first {MAX_TOPIC_BYTES} bytes"
        )
    return frame[:end], end + 1


def read_header(frame: bytes, start: int) -> tuple[Header, int, int]:
    """The header at `start`, the message count and where the body starts.

    Raises `ContractError`: UNSUPPORTED_VERSION for another wire version, BAD_HEADER for a
    truncated header, nonzero flags, a count, length or number out of range, or a sender or
    correlation id that is not UTF-8.
    """
    if len(frame) > start and frame[start] != WIRE_VERSION:
        raise ContractError(
            RejectReason.UNSUPPORTED_VERSION,
            f"wire version {frame[start]}, this reader speaks {WIRE_VERSION}",
            "$.header.wire_version",
        )
    if len(frame) < start + _FIXED_BYTES:
        raise ContractError(
            RejectReason.BAD_HEADER, f"header truncated at {len(frame) - start} bytes"
        )
    _, flags, count, sender_len, corr_len, incarnation, sequence, sent_ns = _unpack(frame, start)
    if (
        flags
        or not 1 <= count <= MAX_BATCH
        or not 1 <= sender_len <= MAX_SENDER_BYTES
        or corr_len > MAX_CORRELATION_BYTES
        or incarnation > U63
        or sent_ns > U63
        or sequence + count - 1 > U63
    ):
        raise ContractError(
            RejectReason.BAD_HEADER,
            f"flags {flags}, count {count}, sender {sender_len} B, correlation {corr_len} B, "
            f"incarnation {incarnation}, sequence {sequence}, sent {sent_ns}: out of range",
        )
    at = start + _FIXED_BYTES
    body = at + sender_len + corr_len
    if body > len(frame):
        raise ContractError(RejectReason.BAD_HEADER, "sender or correlation id truncated")
    try:
        sender = frame[at : at + sender_len].decode()
        correlation = frame[at + sender_len : body].decode() if corr_len else None
    except UnicodeDecodeError as exc:
        raise ContractError(RejectReason.BAD_HEADER, f"not UTF-8: {exc}") from None
    return Header(WIRE_VERSION, sender, incarnation, sequence, sent_ns, correlation), count, body
