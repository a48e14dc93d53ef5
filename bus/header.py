"""The header frame: who sent a message, in what order, and when."""

from __future__ import annotations

from typing import Annotated

import msgspec

from leyline import ContractError, RejectReason

WIRE_VERSION = 1
MAX_HEADER_BYTES = 256

_U63 = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]
_Sender = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]


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


_ENCODER = msgspec.msgpack.Encoder()
_DECODER = msgspec.msgpack.Decoder(Header)


def encode_header(header: Header) -> bytes:
    return _ENCODER.encode(header)


def decode_header(frame: bytes) -> Header:
    """Decode and check a header frame, or raise `ContractError(BAD_HEADER)`."""
    if len(frame) > MAX_HEADER_BYTES:
        raise ContractError(RejectReason.BAD_HEADER, f"header of {len(frame)} bytes")
    try:
        header = _DECODER.decode(frame)
    # msgspec lets bad UTF-8 in a string field escape as UnicodeDecodeError.
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise ContractError(RejectReason.BAD_HEADER, str(exc)) from None
    if header.wire_version != WIRE_VERSION:
        raise ContractError(
            RejectReason.UNSUPPORTED_VERSION,
            f"wire version {header.wire_version}, this reader speaks {WIRE_VERSION}",
            "$.header.wire_version",
        )
    return header
