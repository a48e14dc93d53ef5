"""Hostile peers over tcp: every bad message is refused by name, every good one still arrives.

A raw pyzmq XPUB (not our Publisher: it writes any frames it likes, and its subscription events
tell it when the subscriber is listening) sends each kind of garbage, interleaved with valid
traffic from well-behaved Publishers on other connections of the same subscriber.

Every test runs three times: in plaintext, with CURVE on, and with CURVE on and the signal
channel received in columns (`Subscriber.on_columns`, whose rows are turned back into
envelopes here: the same refusals, the same deliveries). With CURVE each hostile peer is an insider
holding a trusted key (a CURVE server the subscriber pins). Its frames pass the handshake and
the identity step whenever their header names its own identity on a topic its role may use;
every later check must then refuse exactly as in plaintext. What only CURVE can refuse (a
sender or scope that is not the key's) is asserted per mode, in `UNDER_CURVE`.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import msgspec
import pytest
import zmq
from bus_loops import ANY_PORT, handshake, pump_until
from bus_samples import (
    SLOT,
    advance,
    as_fields,
    batch,
    fast_signals,
    forged,
    forged_signal,
    frames,
    header,
    stage_changed,
    wire,
)

from bus import CHANNEL_CONTRACTS, Channel, Envelope, Publisher, Rejection, Subscriber
from bus.columnar import SignalColumns
from bus.header import FIXED, WIRE_VERSION, Header, read_header, split_topic
from bus.security import Curve
from leyline import (
    AdaptationCommand,
    FastTrainingSignals,
    Heartbeat,
    LifecycleGuard,
    RejectReason,
    SeedStage,
)
from leyline.wire import encode
from services.guards import CommandGuard, TransitionGuard

R = RejectReason
SUBSCRIBE = [(Channel.CMD, "w1"), (Channel.SIG, None), (Channel.TEL, None)]
PLAINTEXT, CURVE, COLUMNS = "plaintext", "curve", "curve-columns"
#: The well-behaved publishers: w1's signals and the controller's commands to w1.
SIGNALS, COMMANDS = "w1", "controller"
#: The subscriber under attack listens as the sink (any trusted key may subscribe).
LISTENER = "sink"
#: The hostile insiders (tests/bus/conftest.py): two workers and a second controller.
EVIL, EVIL2, ROGUE = "evil", "evil2", "rogue"
HOSTILE = (EVIL, EVIL2, ROGUE)
SIG_W1 = b"sig.w1."
#: Refused before sequence tracking, so any number of peers may repeat them.
STATELESS = {
    R.FRAME_COUNT, R.BAD_TOPIC, R.BAD_HEADER, R.MALFORMED, R.OVERSIZE,
    R.UNSUPPORTED_VERSION, R.UNKNOWN_TAG, R.INVALID_VALUE, R.FORGED_SENDER, R.NOT_PERMITTED,
}  # fmt: skip
#: Attacks plaintext delivers (a header is believed as written) and CURVE refuses: the header's
#: sender must be the connection's key, and the key's role must allow the topic.
UNDER_CURVE = {
    "another worker's sender id": R.FORGED_SENDER,
    "another worker's scope": R.NOT_PERMITTED,
    "a command from a worker key": R.NOT_PERMITTED,
}

Security = Callable[[str], Curve | None]


@dataclass
class Observed:
    """What the subscriber under attack delivered and refused."""

    delivered: list[Envelope] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)

    def from_sender(self, *senders: str) -> list[Envelope]:
        return [e for e in self.delivered if e.header.sender in senders]


@dataclass
class Arena:
    """The subscriber under attack, its well-behaved publishers, and this mode's keys."""

    mode: str
    signals: Publisher
    commands: Publisher
    subscriber: Subscriber
    observed: Observed
    context: zmq.Context[zmq.Socket[bytes]]
    security: Security
    peers: list[zmq.Socket[bytes]] = field(default_factory=list)

    def address_of(self, identity: str, address: str) -> str:
        """How the subscriber names a server: under CURVE, with the identity whose key it pins."""
        return address if self.mode == PLAINTEXT else f"{identity}@{address}"

    def hostile_peer(self, identity: str) -> zmq.Socket[bytes]:
        """A raw XPUB the subscriber connects to; returns once every subscription arrived.

        Under CURVE it is a server holding `identity`'s trusted key, so the subscriber's
        handshake with it completes and its messages carry that identity.
        """
        peer = self.context.socket(zmq.XPUB)
        peer.setsockopt(zmq.LINGER, 0)
        self.peers.append(peer)
        security = self.security(identity)
        if security is not None:
            security.serve(peer)
        address = peer.bind(ANY_PORT).addr
        self.subscriber.attach(self.address_of(identity, address), bind=False)
        expected = {b"\x01cmd.w1.", b"\x01sig.", b"\x01tel.", b"\x01cmd.*."}
        while expected:
            assert peer.poll(5_000), f"subscriptions never arrived: {expected}"
            expected.discard(peer.recv())
        return peer

    def expected(self, attack: Attack) -> RejectReason | None:
        """What this mode refuses `attack` as (None: a valid message, delivered)."""
        if self.mode == CURVE:
            return UNDER_CURVE.get(attack.what, attack.reason)
        return attack.reason


def _worker_lifecycle() -> LifecycleGuard:
    lifecycle = LifecycleGuard()
    lifecycle.record("w1", SLOT, SeedStage.TRAINING)
    return lifecycle


def _as_envelopes(block: SignalColumns) -> list[Envelope]:
    """A columnar block's rows as the envelopes the per-message path would have made."""
    envelopes = []
    rows = zip(block.epoch.tolist(), block.slot_index.tolist(), block.features, strict=True)
    for group in block.groups:
        for sequence in group.sequences:
            epoch, slot, features = next(rows)
            envelopes.append(
                Envelope(
                    Channel.SIG,
                    group.scope,
                    f"sig.{group.scope}.".encode(),
                    Header(WIRE_VERSION, group.sender, 0, sequence, 0),
                    FastTrainingSignals(epoch, features.tobytes(), slot),
                )
            )
    return envelopes


@pytest.fixture(params=[PLAINTEXT, CURVE, COLUMNS])
def arena(
    request: pytest.FixtureRequest,
    context: zmq.Context[zmq.Socket[bytes]],
    curve: Callable[[str], Curve],
) -> Iterator[Arena]:
    columns = request.param == COLUMNS
    mode: str = CURVE if columns else request.param
    security: Security = curve if mode == CURVE else (lambda _: None)
    signals = Publisher(ANY_PORT, SIGNALS, context=context, security=security(SIGNALS))
    commands = Publisher(ANY_PORT, COMMANDS, context=context, security=security(COMMANDS))
    command_guard = CommandGuard(
        _worker_lifecycle(), "w1", lambda c: c.target_slot_id if c.target_slot_id == SLOT else None
    )
    subscriber = Subscriber(
        [],
        SUBSCRIBE,
        context=context,
        guards={Channel.CMD: command_guard, Channel.TEL: TransitionGuard()},
        security=security(LISTENER),
    )
    observed = Observed()
    arena = Arena(mode, signals, commands, subscriber, observed, context, security)
    for good in (signals, commands):
        subscriber.attach(arena.address_of(good.sender_id, good.address), bind=False)

    def only_valid(envelope: Envelope) -> None:
        assert type(envelope.message) in CHANNEL_CONTRACTS[envelope.channel]
        observed.delivered.append(envelope)

    for channel, _ in SUBSCRIBE:
        subscriber.on(channel, only_valid)
    if columns:
        subscriber.on_columns(
            Channel.SIG,
            lambda block: [only_valid(envelope) for envelope in _as_envelopes(block)],
            min_rows=0,
        )
    subscriber.on_rejection(observed.rejected.append)
    handshake(subscriber, signals, commands)
    yield arena
    for peer in arena.peers:
        peer.close()
    for endpoint in (subscriber, signals, commands):
        endpoint.close()


class Attack(NamedTuple):
    what: str
    frames: list[bytes]
    #: The refusal in plaintext (None: valid and delivered); `UNDER_CURVE` lists changes.
    reason: RejectReason | None
    #: The hostile peer that sends it: under CURVE, the identity its frames arrive with.
    by: str = EVIL
    #: A batch's sequences delivered beside its refused message.
    also: tuple[int, ...] = ()


def _random(rng: random.Random, size: int) -> bytes:
    return bytes(rng.getrandbits(8) for _ in range(size))


def _attacks() -> list[Attack]:
    """Every attack, in the order sent; each header names its peer, but in `UNDER_CURVE`'s."""
    rng = random.Random(20251202)
    signal = encode(fast_signals())
    wrong_tag = as_fields(fast_signals())
    wrong_tag[0] = "Bogus.v1"
    future = as_fields(fast_signals())
    future[0] = "FastTrainingSignals.v3"

    def on_sig(payload: bytes, sequence: int = 1) -> list[bytes]:
        return wire(b"sig.evil.", header(EVIL, sequence), payload)

    def fixed(sender_len: int, tail: bytes, count: int = 1) -> list[bytes]:
        head = FIXED.pack(WIRE_VERSION, 0, count, sender_len, 0, 1, 1, 1)
        return wire(SIG_W1, head + tail, signal)

    v1_header = msgspec.msgpack.encode([1, EVIL, 1, 1, 1])
    nan = forged_signal("train_loss", float("nan"))
    rows: list[tuple[Any, ...]] = [  # (what, frames, reason[, by, also]): Attack fields
        ("random bytes, one frame", [b"sig." + _random(rng, 64)], R.BAD_TOPIC),
        (
            "random topic",
            wire(b"sig.\xff" + _random(rng, 20) + b".", header(), signal),
            R.BAD_TOPIC,
        ),
        ("random header", wire(SIG_W1, b"\x02\x07" + _random(rng, 40), signal), R.BAD_HEADER),
        ("random payload", on_sig(b"\xc1" + _random(rng, 100)), R.MALFORMED),
        ("no terminator", [SIG_W1], R.BAD_TOPIC),
        ("two frames", [SIG_W1, header()], R.FRAME_COUNT),
        ("four frames", [SIG_W1, header(), signal, b"extra"], R.FRAME_COUNT),
        ("a wire v1 message", [SIG_W1, v1_header, signal], R.UNSUPPORTED_VERSION),
        ("over the sig budget", on_sig(b"\x00" * 4_000), R.OVERSIZE),
        ("no trailing dot", wire(b"sig.w1", header(), signal), R.BAD_TOPIC),
        ("scope with a space", wire(b"sig.w 1.", header(), signal), R.BAD_TOPIC),
        ("truncated header", wire(SIG_W1, header()[:12], b""), R.BAD_HEADER),
        ("sender past the end", fixed(60, b"evil"), R.BAD_HEADER),
        ("sender not UTF-8", fixed(2, b"\xc3\x28"), R.BAD_HEADER),
        ("batch count of zero", fixed(4, b"evil", count=0), R.BAD_HEADER),
        (
            "batch count lies",
            [wire(b"sig.evil.", header(EVIL, 1, count=3), b"\x92" + signal * 2)[0]],
            R.BAD_HEADER,
        ),
        ("future version", wire(SIG_W1, header(wire_version=3), signal), R.UNSUPPORTED_VERSION),
        ("unknown tag", on_sig(forged(wrong_tag)), R.UNKNOWN_TAG),
        ("command on the sig channel", on_sig(encode(advance())), R.UNKNOWN_TAG),
        ("future major", on_sig(forged(future)), R.UNSUPPORTED_VERSION),
        ("NaN loss", on_sig(forged_signal("train_loss", float("nan"))), R.INVALID_VALUE),
        ("infinite loss", on_sig(forged_signal("loss_delta", float("inf"))), R.INVALID_VALUE),
        ("alpha above 1", on_sig(forged_signal("seed_alpha", 1.5)), R.INVALID_VALUE),
        ("negative epoch", on_sig(forged_signal("epoch", -1)), R.INVALID_VALUE),
        ("stage out of the enum", on_sig(forged_signal("seed_stage", 99)), R.INVALID_VALUE),
        (
            "short feature block",
            on_sig(forged(["FastTrainingSignals.v2", 1, b"\x00" * 100, 0])),
            R.INVALID_VALUE,
        ),
        ("control topic, data payload", wire(b"sig.*.", header(), signal), R.UNKNOWN_TAG),
        # One stream of the hostile sender: 1, 2, 2 again, 5 (a gap), then 3 late.
        ("sequence 1", on_sig(signal, 1), None),
        ("sequence 2", on_sig(signal, 2), None),
        ("sequence 2 again", on_sig(signal, 2), R.DUPLICATE),
        ("sequence 5", on_sig(signal, 5), None),
        ("sequence 3 after 5", on_sig(signal, 3), R.OUT_OF_ORDER),
        # A batch 6..9 whose 7 is bad: 7 refused (and reported missing), the rest delivered.
        (
            "a bad message inside a batch",
            batch(Channel.SIG, EVIL, [signal, nan, signal, signal], 6),
            R.INVALID_VALUE,
            EVIL,
            (6, 8, 9),
        ),
        ("a valid batch", batch(Channel.SIG, EVIL, [signal] * 3, 10), None),
        ("restart", wire(b"sig.evil2.", header(EVIL2, incarnation=5), signal), None, EVIL2),
        (
            "older incarnation",
            wire(b"sig.evil2.", header(EVIL2, incarnation=4, sequence=2), signal),
            R.STALE,
            EVIL2,
        ),
        (
            "FOSSILIZE a TRAINING slot",
            frames(Channel.CMD, "w1", advance(to=SeedStage.FOSSILIZED), sender=ROGUE),
            R.ILLEGAL_TRANSITION,
            ROGUE,
        ),
        (
            "command for no slot",
            frames(Channel.CMD, "w1", advance("nowhere"), 2, sender=ROGUE),
            R.UNKNOWN_TARGET,
            ROGUE,
        ),
        (
            "stage change skipping stages",
            frames(Channel.TEL, EVIL, stage_changed(SeedStage.GERMINATED, SeedStage.BLENDING)),
            R.ILLEGAL_TRANSITION,
        ),
        (
            "legal stage change",
            frames(Channel.TEL, EVIL, stage_changed(SeedStage.GERMINATED, SeedStage.TRAINING), 2),
            None,
        ),
        # Valid messages a plaintext subscriber must believe; see UNDER_CURVE.
        ("another worker's sender id", wire(b"sig.w2.", header("w2"), signal), None),
        ("another worker's scope", wire(b"sig.w2.", header(EVIL), signal), None),
        ("a command from a worker key", frames(Channel.CMD, "w1", advance(), sender=EVIL), None),
    ]  # fmt: skip
    return [Attack(*row) for row in rows]


def _delivered(attack: Attack, reason: RejectReason | None) -> list[tuple[bytes, str, int]]:
    """The topic, sender and sequence of each message an attack gets delivered."""
    if reason is not None and not attack.also:
        return []
    [frame] = attack.frames
    topic_frame, start = split_topic(frame)
    sent, count, _ = read_header(frame, start)
    first = sent.sequence
    sequences = attack.also if reason is not None else range(first, first + count)
    return [(topic_frame, sent.sender, sequence) for sequence in sequences]


def test_hostile_peer_is_refused_by_reason_and_valid_traffic_all_arrives(arena: Arena) -> None:
    attacks = _attacks()
    assert set(UNDER_CURVE) <= {attack.what for attack in attacks}
    peers = {name: (arena.hostile_peer(name), arena.hostile_peer(name)) for name in HOSTILE}
    good_sent = 0
    expected: Counter[RejectReason] = Counter()
    valid: Counter[tuple[bytes, str, int]] = Counter()
    for attack in attacks:
        arena.signals.publish(Channel.SIG, fast_signals(good_sent % 30), "w1")
        arena.commands.publish(Channel.CMD, advance(), "w1")  # TRAINING -> BLENDING: legal
        good_sent += 1
        hostile, accomplice = peers[attack.by]
        hostile.send_multipart(attack.frames)
        reason = arena.expected(attack)
        if reason in STATELESS and not attack.also:  # a batch's good messages are sequenced
            accomplice.send_multipart(attack.frames)
            expected[reason] += 1
        for delivered in _delivered(attack, reason):
            valid[delivered] += 1
        if reason is not None:
            expected[reason] += 1
        arena.subscriber.poll(0)  # the subscriber keeps working while under attack
    observed = arena.observed

    def everything_arrived() -> bool:
        return (
            len(observed.from_sender(SIGNALS, COMMANDS)) == 2 * good_sent
            and len(observed.rejected) == sum(expected.values())
            and len(observed.delivered) == 2 * good_sent + valid.total()
        )

    assert pump_until(everything_arrived, arena.subscriber), (
        Counter(r.reason for r in observed.rejected),
        expected,
    )
    assert Counter(r.reason for r in observed.rejected) == expected
    counted = {reason: n for reason, n in arena.subscriber.metrics.rejected.items() if n}
    assert counted == expected
    # Every valid message, each exactly once and in order.
    for sender, name in ((SIGNALS, SIG_W1), (COMMANDS, b"cmd.w1.")):
        sequences = [e.header.sequence for e in observed.from_sender(sender) if e.topic == name]
        assert sequences == list(range(1, good_sent + 1))
    # Of the hostile traffic exactly the valid messages arrived, each once: nothing refused did.
    from_hostile = [e for e in observed.delivered if e.header.sender not in {SIGNALS, COMMANDS}]
    assert Counter((e.topic, e.header.sender, e.header.sequence) for e in from_hostile) == valid
    evil_signals = [e.header.sequence for e in observed.delivered if e.topic == b"sig.evil."]
    assert evil_signals == [1, 2, 5, 6, 8, 9, 10, 11, 12]
    # 3-4 never sent, 7 refused inside its batch: a subscriber may ask for both again.
    assert arena.subscriber.metrics.gaps == 2
    assert arena.subscriber.metrics.missing == 3
    # Each refusal names the sender its header claims ("?" when unreadable) and says why in
    # words; a forged sender's names the key that really sent it.
    for rejection in observed.rejected:
        assert rejection.detail
        assert rejection.sender in {*HOSTILE, "w2", "?"}
        if rejection.reason is R.FORGED_SENDER:
            assert repr(EVIL) in rejection.detail
    # And the subscriber is still alive and in order afterwards.
    arena.signals.publish(Channel.SIG, fast_signals(), "w1")
    assert pump_until(
        lambda: len(observed.from_sender(SIGNALS, COMMANDS)) == 2 * good_sent + 1,
        arena.subscriber,
    )


def test_refused_command_carries_the_decoded_command(arena: Arena) -> None:
    rogue = arena.hostile_peer(ROGUE)
    illegal = advance(to=SeedStage.FOSSILIZED)
    rogue.send_multipart(frames(Channel.CMD, "w1", illegal, sender=ROGUE))
    assert pump_until(lambda: len(arena.observed.rejected) == 1, arena.subscriber)
    [rejection] = arena.observed.rejected
    assert rejection.reason is RejectReason.ILLEGAL_TRANSITION
    assert isinstance(rejection.message, AdaptationCommand)
    assert rejection.message.command_id == illegal.command_id
    assert "TRAINING" in rejection.detail and "FOSSILIZED" in rejection.detail
    assert rejection.topic == "cmd.w1."


def test_a_forged_heartbeat_freezes_a_stream_in_plaintext_and_is_refused_under_curve(
    arena: Arena,
) -> None:
    """A heartbeat in w1's name claiming a million signals sent makes every later genuine
    signal of w1 a late arrival where it is believed: plaintext does, CURVE refuses it forged."""
    observed, subscriber = arena.observed, arena.subscriber
    arena.signals.publish(Channel.SIG, fast_signals(), "w1")
    assert pump_until(lambda: len(observed.from_sender(SIGNALS)) == 1, subscriber)
    evil = arena.hostile_peer(EVIL)
    claim = Heartbeat(interval_ms=1_000, last_sequences={SIG_W1.decode(): 1_000_000})
    evil.send_multipart(
        wire(b"cmd.*.", header(SIGNALS, incarnation=arena.signals.incarnation), encode(claim))
    )
    if arena.mode == CURVE:
        assert pump_until(lambda: bool(observed.rejected), subscriber)
        [forged_beat] = observed.rejected
        assert forged_beat.reason is R.FORGED_SENDER and repr(EVIL) in forged_beat.detail
    else:
        assert pump_until(lambda: subscriber.metrics.missing == 999_999, subscriber)
    for epoch in range(5):
        arena.signals.publish(Channel.SIG, fast_signals(epoch), "w1")
    if arena.mode == CURVE:
        assert pump_until(lambda: len(observed.from_sender(SIGNALS)) == 6, subscriber)
        assert [e.header.sequence for e in observed.delivered] == [1, 2, 3, 4, 5, 6]
        assert (subscriber.metrics.gaps, subscriber.metrics.missing) == (0, 0)
        assert subscriber.metrics.rejected[R.FORGED_SENDER] == 1
    else:
        assert pump_until(lambda: len(observed.rejected) == 5, subscriber)
        assert {r.reason for r in observed.rejected} == {R.OUT_OF_ORDER}
        assert len(observed.from_sender(SIGNALS)) == 1
