"""Topic frames: building, parsing, and the trailing delimiter that separates scopes."""

from __future__ import annotations

import pytest

from bus import Channel, topic
from bus.topics import control_topic, parse_topic, subscription
from leyline import ContractError, RejectReason


def test_topic_round_trips_through_parse() -> None:
    for channel in Channel:
        assert parse_topic(topic(channel, "worker-1")) == (channel, "worker-1")


def test_control_topic_parses_to_the_control_scope() -> None:
    assert control_topic(Channel.SIG) == b"sig.*."
    assert parse_topic(control_topic(Channel.SIG)) == (Channel.SIG, "*")


def test_scope_prefix_of_w1_does_not_cover_w10() -> None:
    prefix = subscription(Channel.CMD, "w1")
    assert topic(Channel.CMD, "w1").startswith(prefix)
    assert not topic(Channel.CMD, "w10").startswith(prefix)


def test_whole_channel_subscription_covers_every_scope_and_control() -> None:
    prefix = subscription(Channel.TEL)
    assert topic(Channel.TEL, "w10").startswith(prefix)
    assert control_topic(Channel.TEL).startswith(prefix)
    assert not topic(Channel.REP, "w1").startswith(prefix)


@pytest.mark.parametrize("scope", ["", "a.b", "w 1", "x" * 65, "*", "é"])
def test_publishing_to_an_invalid_scope_is_refused(scope: str) -> None:
    with pytest.raises(ValueError, match="invalid scope"):
        topic(Channel.SIG, scope)


@pytest.mark.parametrize(
    "frame",
    [
        b"",
        b"sig",
        b"sig.",
        b"sig.w1",
        b"sig..",
        b"nope.w1.",
        b"SIG.w1.",
        b"sig.a.b.",
        b"sig.w 1.",
        b"sig.\xff\xfe.",
        b"sig." + b"x" * 65 + b".",
    ],
)
def test_malformed_topic_frame_is_bad_topic(frame: bytes) -> None:
    with pytest.raises(ContractError) as caught:
        parse_topic(frame)
    assert caught.value.reason is RejectReason.BAD_TOPIC
