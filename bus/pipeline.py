"""The enforcement pipeline every subscriber runs, in order:

frame -> topic and header -> identity (the sender is the connection's authenticated key, and
may publish there; no incarnation from the future) -> size -> tag and major version -> typed
decode with value constraints -> sequence -> freshness (fast signals) -> semantic guard ->
handler.

`Pipeline.frame` turns one wire frame (one message or a batch to one topic) into an
`Envelope` or a `Rejection` per message; it never raises on its input. What a frame's
messages share (topic, header, identity, incarnation) is checked once per frame; a refusal
there refuses the frame once. Each message is then decoded, sequenced, aged and guarded on
its own, so one bad message of a batch is refused by name while the rest are delivered.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Generic, TypeVar, cast

import msgspec

from bus.clocks import ClockOffsets
from bus.header import (
    MAX_TOPIC_BYTES,
    TERMINATOR,
    WIRE_VERSION,
    Header,
    read_header,
    split_topic,
)
from bus.identity import IdentityPolicy
from bus.metrics import SubscriberMetrics
from bus.rejection import Rejection
from bus.sequence import ACCEPTED, MAX_STREAMS, Order, SequenceTracker
from bus.topics import CHANNEL_CONTRACTS, CONTROL_SCOPE, Channel, parse_topic
from leyline import ContractError, Heartbeat, Ready, RejectReason, ReplayDone
from leyline.registry import MessageDecoder, Refused
from leyline.wire import REGISTRY

#: Incarnations are start times in ns; one this far past the receiver's clock is refused.
DEFAULT_MAX_CLOCK_SKEW_S = 3600.0
#: Valid topics remembered already parsed (the hot path sees a handful, over and over).
MAX_CACHED_TOPICS = 4096

T = TypeVar("T")
#: A fixed header's count field (bytes 2-3 after the topic's terminator) saying one message.
_ONE_MESSAGE = (1).to_bytes(2, "little")


class Envelope(msgspec.Struct, Generic[T], frozen=True, gc=False):
    """A message that passed every check, with where it came from."""

    channel: Channel
    scope: str
    topic: bytes
    header: Header
    message: T

    @property
    def is_control(self) -> bool:
        return self.scope == CONTROL_SCOPE


#: What the pipeline makes of each message of a frame.
Outcome = Envelope[Any] | Rejection
#: A semantic check after decoding: None to pass, or the error that refuses the message.
SemanticGuard = Callable[[Envelope[Any]], ContractError | None]

_ORDER_REASONS = {
    Order.DUPLICATE: (RejectReason.DUPLICATE, "sequence {seq} was already delivered"),
    Order.OUT_OF_ORDER: (RejectReason.OUT_OF_ORDER, "sequence {seq} arrived after a later one"),
    Order.STALE_INCARNATION: (RejectReason.STALE, "sequence {seq} is from an earlier incarnation"),
}


class Admitted(msgspec.Struct, frozen=True, gc=False):
    """A frame past `Pipeline.admit`: what its messages share, and where its body starts.

    A Struct, not a NamedTuple: built once per frame, its C constructor is the cheaper."""

    channel: Channel
    scope: str
    topic: bytes
    header: Header
    #: How many messages the header says the body holds.
    messages: int
    body: int
    decoder: MessageDecoder
    control: bool


#: What a topic resolves to, once: channel, scope, control scope, data decoder (`_route`).
_Route = tuple[Channel, str, bool, MessageDecoder | None]


class _V1Header(msgspec.Struct, array_like=True):
    """The start of a wire v1 header frame: enough to name the version it was."""

    wire_version: int
    sender: str


_V1_HEADER = msgspec.msgpack.Decoder(_V1Header)


class Pipeline:
    """Checks one subscriber's incoming messages; holds its sequence state and metrics."""

    def __init__(
        self,
        channels: Iterable[Channel],
        *,
        guards: Mapping[Channel, SemanticGuard] | None = None,
        max_signal_age_ns: int | None = None,
        metrics: SubscriberMetrics | None = None,
        clock: Callable[[], int] = time.time_ns,
        identity: IdentityPolicy | None = None,
        max_clock_skew_s: float = DEFAULT_MAX_CLOCK_SKEW_S,
    ) -> None:
        self._decoders: dict[Channel, MessageDecoder] = {
            channel: REGISTRY.decoder(CHANNEL_CONTRACTS[channel]) for channel in channels
        }
        self._control = REGISTRY.decoder([Heartbeat, Ready])
        # A replay answer ends with a ReplayDone on the control topic; only replays carry one.
        self._replay_control = REGISTRY.decoder([ReplayDone])
        self._guards = dict(guards or {})
        self._max_age = max_signal_age_ns
        self._clock = clock
        self._identity = identity
        self._max_skew_ns = int(max_clock_skew_s * 1e9)
        self.tracker = SequenceTracker()
        #: Each sender's clock offset, so freshness does not depend on synchronised clocks.
        self.clocks = ClockOffsets(MAX_STREAMS)
        self._routes: dict[bytes, _Route] = {}
        self.metrics = metrics or SubscriberMetrics()
        #: Rejections made so far: a frame that made none came out as envelopes only.
        self.refusals = 0

    def process(
        self, parts: Sequence[bytes], replay: bool = False, peer: str | None = None
    ) -> list[Outcome]:
        """Run every check on one ZeroMQ message, given as its parts (one part on wire v2).

        A message of several parts is refused once: a three-part message with a v1 header as
        UNSUPPORTED_VERSION, anything else as FRAME_COUNT.
        """
        if len(parts) == 1:
            return self.frame(parts[0], replay, peer)
        first = parts[0] if parts else b""
        refused = ContractError(RejectReason.FRAME_COUNT, f"{len(parts)} parts, expected 1")
        if len(parts) == 3:
            try:
                version = _V1_HEADER.decode(parts[1]).wire_version
            except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
                pass
            else:
                refused = ContractError(
                    RejectReason.UNSUPPORTED_VERSION,
                    f"wire version {version} (three frames), this reader speaks {WIRE_VERSION}",
                    "$.header.wire_version",
                )
        return [self._reject(refused, peer or "?", first[:MAX_TOPIC_BYTES])]

    def frame(self, frame: bytes, replay: bool = False, peer: str | None = None) -> list[Outcome]:
        """Run every check on one frame; one outcome per message, in sequence order.

        `peer` is the identity the frame's connection authenticated as (the ZAP User-Id on
        a server socket, the pinned server on a client socket); with an identity policy it
        must be given. A replayed frame (`replay`) fills a gap already counted, so the
        sequence step is skipped; every other check runs as usual.
        """
        admitted = self.admit(frame, replay, peer)
        if isinstance(admitted, Rejection):
            return [admitted]
        return self.produce(admitted, frame, replay)

    def lone(self, frame: bytes, peer: str | None = None) -> Outcome | None:
        """`frame` fused for the commonest frame of a round trip, one data message to a
        topic seen before: its one outcome. None, with nothing counted or recorded, for any
        other frame or one that fails a check of what frames share: `frame` then takes it
        and names the refusal.

        Every check of `frame` runs, in its order; past the shared ones the message is
        counted and decided here (a gap, a repeat or a stale signal through `_sequenced`).
        One call and a handful of steps instead of `admit`, `produce`, `_sequenced` and
        `_envelopes` (~30 Python calls a guarded command): after a blocking wait that path
        runs cold, at several times its warm cost (BENCHMARKS.md, `bus`).
        """
        end = frame.find(TERMINATOR, 0, MAX_TOPIC_BYTES + 1)
        if end < 0 or frame[end + 3 : end + 5] != _ONE_MESSAGE:
            return None
        topic = frame[:end]
        route = self._routes.get(topic)
        if route is None:
            return None
        channel, scope, control, decoder = route
        if control or decoder is None:
            return None
        try:
            header, _, body = read_header(frame, end + 1)
        except ContractError:
            return None
        sender = header.sender
        identity = self._identity
        if identity is not None and identity.check(peer or "", sender, channel, scope):
            return None
        if header.incarnation > self._clock() + self._max_skew_ns:
            return None
        metrics = self.metrics
        metrics.received[channel] += 1
        payload = memoryview(frame)[body:]
        started = time.perf_counter_ns()
        try:
            message = decoder.decode(payload)
        except ContractError as bad_payload:
            return self._reject(bad_payload, sender, topic, payload=bytes(payload))
        metrics.decode_latency.observe(time.perf_counter_ns() - started)
        if not self.tracker.observe_run(sender, topic, header.incarnation, header.sequence, 1):
            # Not the stream's next: sequenced message by message, as `frame` does.
            return self._sequenced(channel, scope, topic, header, [message], False)[0]
        if channel is Channel.SIG and self._max_age is not None:
            age = self.frame_age(header)
            if age > self._max_age:
                return self._sequenced(channel, scope, topic, header, [message], True, True, age)[0]
        envelope: Envelope[Any] = Envelope(channel, scope, topic, header, message)
        guard = self._guards.get(channel)
        return envelope if guard is None else self._guarded(envelope, guard)

    def admit(
        self, frame: bytes, replay: bool = False, peer: str | None = None
    ) -> Admitted | Rejection:
        """The checks of what a frame's messages share: topic, header, identity, incarnation
        and whether this subscriber takes the channel; counts the frame's messages received.

        The first half of `frame`, apart so that the columnar receive (`bus.columnar`)
        admits a frame exactly as the per-message path does before it decodes the body.
        """
        try:
            topic_frame, start = split_topic(frame)
        except ContractError as bad_frame:
            return self._reject(bad_frame, peer or "?", frame[:MAX_TOPIC_BYTES])
        try:
            route = self._routes.get(topic_frame) or self._route(topic_frame)
            header, count, body = read_header(frame, start)
        except ContractError as bad_frame:
            return self._reject(bad_frame, peer or "?", topic_frame)
        channel, scope, control, decoder = route
        self.metrics.received[channel] += count
        sender = header.sender
        if self._identity is not None:
            refused = self._identity.check(peer or "", sender, channel, scope)
            if refused is not None:
                # Blame the key that sent it, not the identity its header claims.
                return self._reject(refused, peer or "?", topic_frame)
        if header.incarnation > self._clock() + self._max_skew_ns:
            future = ContractError(
                RejectReason.FUTURE_INCARNATION,
                f"incarnation {header.incarnation} is past this clock plus "
                f"{self._max_skew_ns / 1e9:.0f} s of allowed skew",
                "$.header.incarnation",
            )
            return self._reject(future, sender, topic_frame)
        if control:
            decoder = self._replay_control if replay else self._control
        if decoder is None:
            unwanted = ContractError(RejectReason.BAD_TOPIC, f"not subscribed to {channel.value}")
            return self._reject(unwanted, sender, topic_frame)
        return Admitted(channel, scope, topic_frame, header, count, body, decoder, control)

    def _route(self, topic_frame: bytes) -> _Route:
        """A topic's channel, scope, whether it is the control scope, and the decoder of its
        data messages (None: not subscribed); cached, up to `MAX_CACHED_TOPICS`."""
        channel, scope = parse_topic(topic_frame)
        control = scope == CONTROL_SCOPE
        route = (channel, scope, control, None if control else self._decoders.get(channel))
        if len(self._routes) < MAX_CACHED_TOPICS:
            self._routes[topic_frame] = route
        return route

    def produce(
        self,
        admitted: Admitted,
        frame: bytes,
        replay: bool = False,
        *,
        sequenced: bool = False,
        age: int = -1,
    ) -> list[Outcome]:
        """The second half of `frame`: decode an admitted frame's body, then sequence, age
        and guard each message.

        `sequenced`: the caller already recorded the frame's run of sequences
        (`SequenceTracker.observe_run`); `age`: the frame's age when already taken.
        """
        channel, scope, topic_frame, header = (
            admitted.channel,
            admitted.scope,
            admitted.topic,
            admitted.header,
        )
        count, decoder, control = admitted.messages, admitted.decoder, admitted.control
        sender = header.sender
        body = admitted.body
        payload = memoryview(frame)[body:]
        started = time.perf_counter_ns()
        try:
            if count == 1:
                messages, clean = [decoder.decode(payload)], True
            else:
                messages, clean = decoder.decode_many(payload)
        except ContractError as bad_payload:
            return [self._reject(bad_payload, sender, topic_frame, payload=bytes(payload))]
        self.metrics.decode_latency.observe((time.perf_counter_ns() - started) // count, count)
        if len(messages) != count:
            lie = ContractError(
                RejectReason.BAD_HEADER,
                f"header says {count} messages, the body holds {len(messages)}",
                "$.header.count",
            )
            return [self._reject(lie, sender, topic_frame)]
        if control or replay:
            if control and not replay and self._max_age is not None:
                # Heartbeats (on `cmd.*.`, whatever the channel) teach the sender's clock
                # offset before its first signal.
                self.clocks.age(sender, header.incarnation, header.sent_ns, self._clock())
            return self._unsequenced(channel, scope, topic_frame, header, messages)
        return self._sequenced(channel, scope, topic_frame, header, messages, clean, sequenced, age)

    def frame_age(self, header: Header) -> int:
        """A fast-signal frame's age (ns, skew taken out): `clocks.age` at this clock."""
        return self.clocks.age(header.sender, header.incarnation, header.sent_ns, self._clock())

    def now(self) -> int:
        """This pipeline's clock (ns): what ages and incarnations are judged against."""
        return self._clock()

    @property
    def max_signal_age_ns(self) -> int | None:
        return self._max_age

    def guard_of(self, channel: Channel) -> SemanticGuard | None:
        return self._guards.get(channel)

    def _unsequenced(
        self, channel: Channel, scope: str, topic: bytes, header: Header, messages: list[Any]
    ) -> list[Outcome]:
        """Control and replayed messages: decoded and guarded, not sequenced."""
        outcomes: list[Outcome] = []
        for index, message in enumerate(messages):
            if isinstance(message, Refused):
                outcomes.append(self._refused(message, header.sender, topic))
                continue
            outcomes.append(Envelope(channel, scope, topic, _nth(header, index), message))
        return outcomes

    def _sequenced(
        self,
        channel: Channel,
        scope: str,
        topic: bytes,
        header: Header,
        messages: list[Any],
        clean: bool,
        sequenced: bool = False,
        age: int = -1,
    ) -> list[Outcome]:
        """A frame's data messages (`clean`: every one decoded): sequence, freshness and
        guard per message. `sequenced`: the caller recorded the frame's run already."""
        sender, incarnation, first = header.sender, header.incarnation, header.sequence
        tracker = self.tracker
        # A batch that continues its stream is recorded in one step; anything else (a bad
        # message inside, a gap, a repeat) is sequenced message by message.
        count = len(messages)
        in_order = sequenced or (
            clean and tracker.observe_run(sender, topic, incarnation, first, count)
        )
        # One send time per frame: aged once, at its first message still standing (`age`
        # when the caller took it already).
        max_age = self._max_age if channel is Channel.SIG else None
        guard = self._guards.get(channel)
        if in_order and clean:
            if max_age is not None and age < 0:
                age = self.frame_age(header)
            if max_age is None or age <= max_age:
                # The common frame, all valid, in order and fresh: one pass (and the guard).
                envelopes = _envelopes(channel, scope, topic, header, messages)
                if guard is None:
                    return cast("list[Outcome]", envelopes)
                return [self._guarded(envelope, guard) for envelope in envelopes]
        outcomes: list[Outcome] = []
        append = outcomes.append
        for index, message in enumerate(messages):
            if isinstance(message, Refused):
                append(self._refused(message, sender, topic))
                continue
            sequence = first + index
            if not in_order:
                order = tracker.observe(sender, topic, incarnation, sequence)
                if order not in ACCEPTED:
                    reason, text = _ORDER_REASONS[order]
                    misordered = ContractError(
                        reason, text.format(seq=sequence), "$.header.sequence"
                    )
                    append(self._reject(misordered, sender, topic, message))
                    continue
                if order is Order.RESTART:
                    self.metrics.restarts += 1
            if max_age is not None:
                if age < 0:
                    age = self.frame_age(header)
                if age > max_age:
                    stale = ContractError(
                        RejectReason.STALE,
                        f"signal is {age / 1e6:.0f} ms older than its sender's fastest recent "
                        f"ones, limit {max_age / 1e6:.0f} ms",
                        "$.header.sent_ns",
                    )
                    append(self._reject(stale, sender, topic, message))
                    continue
            envelope = Envelope(channel, scope, topic, _nth(header, index), message)
            append(envelope if guard is None else self._guarded(envelope, guard))
        return outcomes

    def _guarded(self, envelope: Envelope[Any], guard: SemanticGuard) -> Outcome:
        try:
            refusal = guard(envelope)
        except Exception as exc:  # a faulty guard must not kill the subscriber
            refusal = ContractError(
                RejectReason.HANDLER_ERROR, f"guard failed: {type(exc).__name__}: {exc}"
            )
        if refusal is None:
            return envelope
        return self._reject(refusal, envelope.header.sender, envelope.topic, envelope.message)

    def _refused(self, refused: Refused, sender: str, topic: bytes) -> Rejection:
        return self._reject(refused.error, sender, topic, payload=refused.payload)

    def _reject(
        self,
        error: ContractError,
        sender: str,
        topic: bytes,
        message: Any = None,
        payload: bytes = b"",
    ) -> Rejection:
        self.metrics.rejected[error.reason] += 1
        self.refusals += 1
        return Rejection.from_error(error, sender, topic, message, payload)


def _nth(header: Header, index: int) -> Header:
    """The header of a frame's `index`-th message: the frame's, at sequence + index."""
    if index == 0:
        return header
    return Header(
        WIRE_VERSION,
        header.sender,
        header.incarnation,
        header.sequence + index,
        header.sent_ns,
        header.correlation_id,
    )


def _envelopes(
    channel: Channel, scope: str, topic: bytes, header: Header, messages: list[Any]
) -> list[Envelope[Any]]:
    """One frame's messages as envelopes, each with its own header, in one pass."""
    if len(messages) == 1:
        return [Envelope(channel, scope, topic, header, messages[0])]
    sender, incarnation, sent_ns = header.sender, header.incarnation, header.sent_ns
    correlation = header.correlation_id
    first = header.sequence
    return [
        Envelope(
            channel,
            scope,
            topic,
            Header(WIRE_VERSION, sender, incarnation, sequence, sent_ns, correlation),
            message,
        )
        for sequence, message in zip(range(first, first + len(messages)), messages, strict=True)
    ]
