"""Hostile peers over tcp: every bad message is refused by name, every good one still arrives.

A raw pyzmq XPUB (not our Publisher: it writes any frames it likes, and its subscription events
tell it when the subscriber is listening) sends each kind of garbage, interleaved with valid
traffic from a well-behaved Publisher on another connection of the same subscriber.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import msgspec
import pytest
import zmq
from bus_loops import ANY_PORT, handshake, pump_until
from bus_samples import (
    SLOT,
    advance,
    as_fields,
    fast_signals,
    forged,
    forged_signal,
    frames,
    header,
    stage_changed,
)

from bus import (
    CHANNEL_CONTRACTS,
    Channel,
    CommandGuard,
    Envelope,
    Publisher,
    Rejection,
    Subscriber,
    TransitionGuard,
)
from leyline import AdaptationCommand, LifecycleGuard, RejectReason, SeedStage, encode

R = RejectReason
SUBSCRIBE = [(Channel.CMD, "w1"), (Channel.SIG, None), (Channel.TEL, None)]
GOOD = "good"
SIG_W1 = b"sig.w1."
#: Refused before sequence tracking, so any number of peers may repeat them.
STATELESS = {
    R.FRAME_COUNT, R.BAD_TOPIC, R.BAD_HEADER, R.MALFORMED, R.OVERSIZE,
    R.UNSUPPORTED_VERSION, R.UNKNOWN_TAG, R.INVALID_VALUE,
}  # fmt: skip


@dataclass
class Observed:
    """What the subscriber under attack delivered and refused."""

    delivered: list[Envelope] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)

    def from_sender(self, sender: str) -> list[Envelope]:
        return [e for e in self.delivered if e.header.sender == sender]


@dataclass
class Arena:
    good: Publisher
    subscriber: Subscriber
    observed: Observed
    context: zmq.Context[zmq.Socket[bytes]]

    def hostile_peer(self) -> zmq.Socket[bytes]:
        """A raw XPUB the subscriber connects to; returns once every subscription arrived."""
        peer = self.context.socket(zmq.XPUB)
        peer.setsockopt(zmq.LINGER, 0)
        address = peer.bind(ANY_PORT).addr
        self.subscriber.attach(address, bind=False)
        expected = {b"\x01cmd.w1.", b"\x01sig.", b"\x01tel.", b"\x01cmd.*."}
        while expected:
            assert peer.poll(5_000), f"subscriptions never arrived: {expected}"
            expected.discard(peer.recv())
        return peer


def _worker_lifecycle() -> LifecycleGuard:
    lifecycle = LifecycleGuard()
    lifecycle.record("w1", SLOT, SeedStage.TRAINING)
    return lifecycle


@pytest.fixture
def arena(context: zmq.Context[zmq.Socket[bytes]]) -> Iterator[Arena]:
    good = Publisher(ANY_PORT, GOOD, context=context)
    command_guard = CommandGuard(
        _worker_lifecycle(), "w1", lambda c: c.target_slot_id if c.target_slot_id == SLOT else None
    )
    subscriber = Subscriber(
        good.address,
        SUBSCRIBE,
        context=context,
        guards={Channel.CMD: command_guard, Channel.TEL: TransitionGuard()},
    )
    observed = Observed()

    def only_valid(envelope: Envelope) -> None:
        assert type(envelope.message) in CHANNEL_CONTRACTS[envelope.channel]
        observed.delivered.append(envelope)

    for channel, _ in SUBSCRIBE:
        subscriber.on(channel, only_valid)
    subscriber.on_rejection(observed.rejected.append)
    handshake(subscriber, good)
    yield Arena(good, subscriber, observed, context)


def _random(rng: random.Random, size: int) -> bytes:
    return bytes(rng.getrandbits(8) for _ in range(size))


def _attacks() -> list[tuple[str, list[bytes], RejectReason | None]]:
    """(what, frames, expected reason or None when the message is valid and delivered)."""
    rng = random.Random(20251202)
    signal = encode(fast_signals())
    command = advance()
    wrong_tag = as_fields(fast_signals())
    wrong_tag[0] = "Bogus.v1"
    future = as_fields(fast_signals())
    future[0] = "FastTrainingSignals.v2"

    def on_sig(payload: bytes, sequence: int = 1, scope: str = "evil") -> list[bytes]:
        return [f"sig.{scope}.".encode(), header(sequence=sequence), payload]

    return [
        ("random bytes, one frame", [b"sig." + _random(rng, 64)], R.FRAME_COUNT),
        ("random topic", [b"sig.\xff" + _random(rng, 20) + b".", header(), signal], R.BAD_TOPIC),
        ("random header", [SIG_W1, b"\xc1" + _random(rng, 40), signal], R.BAD_HEADER),
        ("random payload", on_sig(b"\xc1" + _random(rng, 100)), R.MALFORMED),
        ("one frame", [SIG_W1], R.FRAME_COUNT),
        ("two frames", [SIG_W1, header()], R.FRAME_COUNT),
        ("four frames", [SIG_W1, header(), signal, b"extra"], R.FRAME_COUNT),
        ("over the sig budget", on_sig(b"\x00" * 4_000), R.OVERSIZE),
        ("no trailing dot", [b"sig.w1", header(), signal], R.BAD_TOPIC),
        ("scope with a space", [b"sig.w 1.", header(), signal], R.BAD_TOPIC),
        ("header of the wrong shape", [SIG_W1, msgspec.msgpack.encode([1]), signal], R.BAD_HEADER),
        ("header not UTF-8", [SIG_W1, b"\x95\x01\xa2\xc3\x28\x01\x01\x01", signal], R.BAD_HEADER),
        ("future wire version", [SIG_W1, header(wire_version=2), signal], R.UNSUPPORTED_VERSION),
        ("unknown tag", on_sig(forged(wrong_tag)), R.UNKNOWN_TAG),
        ("command on the sig channel", on_sig(encode(command)), R.UNKNOWN_TAG),
        ("future major", on_sig(forged(future)), R.UNSUPPORTED_VERSION),
        ("NaN loss", on_sig(forged_signal("train_loss", float("nan"))), R.INVALID_VALUE),
        ("infinite loss", on_sig(forged_signal("loss_delta", float("inf"))), R.INVALID_VALUE),
        ("alpha above 1", on_sig(forged_signal("seed_alpha", 1.5)), R.INVALID_VALUE),
        ("negative epoch", on_sig(forged_signal("epoch", -1)), R.INVALID_VALUE),
        ("stage out of the enum", on_sig(forged_signal("seed_stage", 99)), R.INVALID_VALUE),
        ("control topic, data payload", [b"sig.*.", header(), signal], R.UNKNOWN_TAG),
        # One stream of the hostile sender: 1, 2, 2 again, 5 (a gap), then 3 late.
        ("sequence 1", on_sig(signal, 1), None),
        ("sequence 2", on_sig(signal, 2), None),
        ("sequence 2 again", on_sig(signal, 2), R.DUPLICATE),
        ("sequence 5", on_sig(signal, 5), None),
        ("sequence 3 after 5", on_sig(signal, 3), R.OUT_OF_ORDER),
        ("restart", [b"sig.evil2.", header(incarnation=5), signal], None),
        ("older incarnation", [b"sig.evil2.", header(incarnation=4, sequence=2), signal], R.STALE),
        (
            "FOSSILIZE a TRAINING slot",
            frames(Channel.CMD, "w1", advance(to=SeedStage.FOSSILIZED)),
            R.ILLEGAL_TRANSITION,
        ),
        ("command for no slot", frames(Channel.CMD, "w1", advance("nowhere"), 2), R.UNKNOWN_TARGET),
        (
            "stage change skipping stages",
            frames(Channel.TEL, "evil", stage_changed(SeedStage.GERMINATED, SeedStage.BLENDING)),
            R.ILLEGAL_TRANSITION,
        ),
        (
            "legal stage change",
            frames(Channel.TEL, "evil", stage_changed(SeedStage.GERMINATED, SeedStage.TRAINING), 2),
            None,
        ),
    ]  # fmt: skip


def test_hostile_peer_is_refused_by_reason_and_valid_traffic_all_arrives(arena: Arena) -> None:
    attacks = _attacks()
    evil, accomplice = arena.hostile_peer(), arena.hostile_peer()
    good_sent = 0
    expected: Counter[RejectReason] = Counter()
    for _, attack, reason in attacks:
        arena.good.publish(Channel.SIG, "w1", fast_signals(good_sent % 30))
        arena.good.publish(Channel.CMD, "w1", advance())  # TRAINING -> BLENDING: legal
        good_sent += 1
        evil.send_multipart(attack)
        if reason in STATELESS:
            accomplice.send_multipart(attack)
            expected[reason] += 1
        if reason is not None:
            expected[reason] += 1
        arena.subscriber.poll(0)  # the subscriber keeps working while under attack
    valid_evil = sum(reason is None for _, _, reason in attacks)
    observed = arena.observed

    def everything_arrived() -> bool:
        return (
            len(observed.from_sender(GOOD)) == 2 * good_sent
            and len(observed.rejected) == sum(expected.values())
            and len(observed.delivered) == 2 * good_sent + valid_evil
        )

    assert pump_until(everything_arrived, arena.subscriber), (
        Counter(r.reason for r in observed.rejected),
        expected,
    )
    assert Counter(r.reason for r in observed.rejected) == expected
    counted = {reason: n for reason, n in arena.subscriber.metrics.rejected.items() if n}
    assert counted == expected
    # Every valid message, each exactly once and in order.
    for name in (SIG_W1, b"cmd.w1."):
        sequences = [e.header.sequence for e in observed.from_sender(GOOD) if e.topic == name]
        assert sequences == list(range(1, good_sent + 1))
    assert [e.header.sequence for e in observed.delivered if e.topic == b"sig.evil."] == [1, 2, 5]
    assert arena.subscriber.metrics.gaps == 1
    assert arena.subscriber.metrics.missing == 2
    # Each refusal names the offender and says why in words.
    for rejection in observed.rejected:
        assert rejection.detail
        assert rejection.sender in {"evil", "?"}
    # And the subscriber is still alive and in order afterwards.
    arena.good.publish(Channel.SIG, "w1", fast_signals())
    assert pump_until(
        lambda: len(observed.from_sender(GOOD)) == 2 * good_sent + 1, arena.subscriber
    )


def test_refused_command_carries_the_decoded_command(arena: Arena) -> None:
    evil = arena.hostile_peer()
    illegal = advance(to=SeedStage.FOSSILIZED)
    evil.send_multipart(frames(Channel.CMD, "w1", illegal))
    assert pump_until(lambda: len(arena.observed.rejected) == 1, arena.subscriber)
    [rejection] = arena.observed.rejected
    assert rejection.reason is RejectReason.ILLEGAL_TRANSITION
    assert isinstance(rejection.message, AdaptationCommand)
    assert rejection.message.command_id == illegal.command_id
    assert "TRAINING" in rejection.detail and "FOSSILIZED" in rejection.detail
    assert rejection.topic == "cmd.w1."
