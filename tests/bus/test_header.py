"""The header frame: a round trip, and every way a forged one is refused."""

from __future__ import annotations

import msgspec
import pytest

from bus.header import MAX_HEADER_BYTES, WIRE_VERSION, Header, decode_header, encode_header
from leyline import ContractError, RejectReason


def test_header_round_trips_with_and_without_correlation() -> None:
    for correlation in (None, "cmd-42"):
        header = Header(WIRE_VERSION, "controller", 7, 12, 1_700_000_000, correlation)
        assert decode_header(encode_header(header)) == header


def _reason(frame: bytes) -> RejectReason:
    with pytest.raises(ContractError) as caught:
        decode_header(frame)
    return caught.value.reason


@pytest.mark.parametrize(
    "frame",
    [
        b"",
        b"\xc1",
        b"not msgpack at all",
        msgspec.msgpack.encode([WIRE_VERSION, "s", 1]),
        msgspec.msgpack.encode([WIRE_VERSION, "", 1, 1, 1]),
        msgspec.msgpack.encode([WIRE_VERSION, "s" * 65, 1, 1, 1]),
        msgspec.msgpack.encode([WIRE_VERSION, "s", -1, 1, 1]),
        msgspec.msgpack.encode([WIRE_VERSION, "s", 1, 2**63, 1]),
        msgspec.msgpack.encode([WIRE_VERSION, "s", 1, 1, 1.5]),
        msgspec.msgpack.encode({"wire_version": 1}),
        # A sender that is not UTF-8: msgspec raises UnicodeDecodeError, not DecodeError.
        b"\x95\x01\xa2\xc3\x28\x01\x01\x01",
        b"\x91" * 200 + b"\x01",
    ],
)
def test_malformed_header_is_bad_header(frame: bytes) -> None:
    assert _reason(frame) is RejectReason.BAD_HEADER


def test_oversized_header_is_refused_before_decoding() -> None:
    frame = encode_header(Header(WIRE_VERSION, "s", 1, 1, 1, "c" * MAX_HEADER_BYTES))
    assert _reason(frame) is RejectReason.BAD_HEADER


def test_other_wire_version_is_unsupported() -> None:
    frame = encode_header(Header(WIRE_VERSION + 1, "s", 1, 1, 1))
    assert _reason(frame) is RejectReason.UNSUPPORTED_VERSION
