"""The wire v2 frame: a round trip, and every way a forged topic or header is refused."""

from __future__ import annotations

import pytest

from bus.header import (
    FIXED,
    MAX_BATCH,
    MAX_TOPIC_BYTES,
    U63,
    WIRE_VERSION,
    Header,
    encode_frame,
    read_header,
    split_topic,
)
from leyline import ContractError, RejectReason

TOPIC = b"sig.w1."


def _read(frame: bytes) -> tuple[bytes, Header, int, bytes]:
    topic, start = split_topic(frame)
    header, count, body = read_header(frame, start)
    return topic, header, count, frame[body:]


def test_frame_round_trips_with_and_without_correlation() -> None:
    for correlation in (None, "cmd-42"):
        header = Header(WIRE_VERSION, "controller", 7, 12, 1_700_000_000, correlation)
        assert _read(encode_frame(TOPIC, header, b"payload", 3)) == (TOPIC, header, 3, b"payload")


def _fixed(
    *,
    version: int = WIRE_VERSION,
    flags: int = 0,
    count: int = 1,
    sender_len: int = 1,
    corr_len: int = 0,
    incarnation: int = 1,
    sequence: int = 1,
    sent_ns: int = 1,
) -> bytes:
    return (
        TOPIC
        + b"\x00"
        + FIXED.pack(version, flags, count, sender_len, corr_len, incarnation, sequence, sent_ns)
    )


def _reason(frame: bytes) -> RejectReason:
    with pytest.raises(ContractError) as caught:
        _read(frame)
    return caught.value.reason


@pytest.mark.parametrize(
    "frame",
    [
        TOPIC + b"\x00",  # no header at all
        TOPIC + b"\x00\x02\x00",  # truncated fixed part
        _fixed(sender_len=5) + b"ab",  # sender shorter than its length
        _fixed(sender_len=1, corr_len=4) + b"s",  # correlation id missing
        _fixed(sender_len=0),
        _fixed(sender_len=65) + b"s" * 65,
        _fixed(corr_len=129) + b"s" + b"c" * 129,
        _fixed(flags=1) + b"s",
        _fixed(count=0) + b"s",
        _fixed(count=MAX_BATCH + 1) + b"s",
        _fixed(incarnation=U63 + 1) + b"s",
        _fixed(sent_ns=U63 + 1) + b"s",
        _fixed(sequence=U63, count=2) + b"s",  # the batch's sequences run past 2**63 - 1
        _fixed(sender_len=2) + b"\xc3\x28",  # a sender that is not UTF-8
        _fixed(corr_len=1) + b"s\xff",  # a correlation id that is not UTF-8
    ],
)
def test_malformed_header_is_bad_header(frame: bytes) -> None:
    assert _reason(frame) is RejectReason.BAD_HEADER


@pytest.mark.parametrize(
    "frame",
    [b"sig.w1.", b"s" * (MAX_TOPIC_BYTES + 1) + b"\x00", b""],
    ids=["none", "late", "empty"],
)
def test_a_topic_without_its_terminator_is_bad_topic(frame: bytes) -> None:
    assert _reason(frame) is RejectReason.BAD_TOPIC


@pytest.mark.parametrize("version", [0, 1, WIRE_VERSION + 1, 255])
def test_other_wire_version_is_unsupported(version: int) -> None:
    assert _reason(_fixed(version=version) + b"s") is RejectReason.UNSUPPORTED_VERSION
