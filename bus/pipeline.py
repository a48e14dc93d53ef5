"""The enforcement pipeline every subscriber runs, in order:

frames -> size -> topic and header -> identity (the sender is the connection's authenticated
key, and may publish there; no incarnation from the future) -> tag and major version -> typed
decode with value constraints -> sequence -> freshness (fast signals) -> semantic guard ->
handler.

`Pipeline.process` turns one multipart message into an `Envelope` to deliver or a `Rejection`;
it never raises on its input.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import msgspec

from bus.clocks import ClockOffsets
from bus.header import Header, decode_header
from bus.identity import IdentityPolicy
from bus.metrics import SubscriberMetrics
from bus.rejection import Rejection
from bus.sequence import ACCEPTED, MAX_STREAMS, Order, SequenceTracker
from bus.topics import CHANNEL_CONTRACTS, CONTROL_SCOPE, Channel, parse_topic
from leyline import (
    REGISTRY,
    ContractError,
    Heartbeat,
    MessageDecoder,
    Ready,
    RejectReason,
    ReplayDone,
)

FRAMES = 3
#: Incarnations are start times in ns; one this far past the receiver's clock is refused.
DEFAULT_MAX_CLOCK_SKEW_S = 3600.0
#: Valid topics remembered already parsed (the hot path sees a handful, over and over).
MAX_CACHED_TOPICS = 4096


class Envelope(msgspec.Struct, frozen=True, gc=False):
    """A message that passed every check, with where it came from."""

    channel: Channel
    scope: str
    topic: bytes
    header: Header
    message: Any

    @property
    def is_control(self) -> bool:
        return self.scope == CONTROL_SCOPE


#: A semantic check after decoding: None to pass, or the error that refuses the message.
SemanticGuard = Callable[[Envelope], ContractError | None]

_ORDER_REASONS = {
    Order.DUPLICATE: (RejectReason.DUPLICATE, "sequence {seq} was already delivered"),
    Order.OUT_OF_ORDER: (RejectReason.OUT_OF_ORDER, "sequence {seq} arrived after a later one"),
    Order.STALE_INCARNATION: (RejectReason.STALE, "sequence {seq} is from an earlier incarnation"),
}


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
        self._topics: dict[bytes, tuple[Channel, str]] = {}
        self.metrics = metrics or SubscriberMetrics()

    def process(
        self, frames: list[bytes], replay: bool = False, peer: str | None = None
    ) -> Envelope | Rejection:
        """Run every check on one multipart message.

        `peer` is the identity the message's connection authenticated as (the ZAP User-Id on
        a server socket, the pinned server on a client socket); with an identity policy it
        must be given. A replayed message (`replay`) fills a gap already counted, so the
        sequence step is skipped; every other check runs as usual.
        """
        if len(frames) != FRAMES:
            first = frames[0] if frames else b""
            return self._reject(
                ContractError(RejectReason.FRAME_COUNT, f"{len(frames)} frames, expected 3"),
                peer or "?",
                first,
            )
        topic_frame, header_frame, payload = frames
        try:
            parsed = self._topics.get(topic_frame)
            if parsed is None:
                parsed = parse_topic(topic_frame)
                if len(self._topics) < MAX_CACHED_TOPICS:
                    self._topics[topic_frame] = parsed
            channel, scope = parsed
            header = decode_header(header_frame)
        except ContractError as bad_frame:
            return self._reject(bad_frame, peer or "?", topic_frame)
        self.metrics.received[channel] += 1
        if self._identity is not None:
            refused = self._identity.check(peer or "", header.sender, channel, scope)
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
            return self._reject(future, header.sender, topic_frame)
        decoder: MessageDecoder | None
        if scope == CONTROL_SCOPE:
            decoder = self._replay_control if replay else self._control
        else:
            decoder = self._decoders.get(channel)
        if decoder is None:
            unwanted = ContractError(RejectReason.BAD_TOPIC, f"not subscribed to {channel.value}")
            return self._reject(unwanted, header.sender, topic_frame)
        started = time.perf_counter_ns()
        try:
            message = decoder.decode(payload)
        except ContractError as bad_payload:
            return self._reject(bad_payload, header.sender, topic_frame, payload=payload)
        self.metrics.decode_latency.observe(time.perf_counter_ns() - started)
        envelope = Envelope(channel, scope, topic_frame, header, message)
        if scope == CONTROL_SCOPE or replay:
            if channel is Channel.SIG and self._max_age is not None:
                # Heartbeats teach the sender's clock offset before its first signal.
                self.clocks.age(header.sender, header.incarnation, header.sent_ns, self._clock())
            return envelope
        sequence = header.sequence
        order = self.tracker.observe(header.sender, topic_frame, header.incarnation, sequence)
        if order not in ACCEPTED:
            reason, text = _ORDER_REASONS[order]
            misordered = ContractError(reason, text.format(seq=sequence), "$.header.sequence")
            return self._reject(misordered, header.sender, topic_frame, message)
        if order is Order.RESTART:
            self.metrics.restarts += 1
        if self._max_age is not None and channel is Channel.SIG:
            age = self.clocks.age(header.sender, header.incarnation, header.sent_ns, self._clock())
            if age > self._max_age:
                stale = ContractError(
                    RejectReason.STALE,
                    f"signal is {age / 1e6:.0f} ms older than its sender's fastest recent ones, "
                    f"limit {self._max_age / 1e6:.0f} ms",
                    "$.header.sent_ns",
                )
                return self._reject(stale, header.sender, topic_frame, message)
        guard = self._guards.get(channel)
        if guard is not None:
            try:
                refusal = guard(envelope)
            except Exception as exc:  # a faulty guard must not kill the subscriber
                refusal = ContractError(
                    RejectReason.HANDLER_ERROR, f"guard failed: {type(exc).__name__}: {exc}"
                )
            if refusal is not None:
                return self._reject(refusal, header.sender, topic_frame, message)
        return envelope

    def _reject(
        self,
        error: ContractError,
        sender: str,
        topic: bytes,
        message: Any = None,
        payload: bytes = b"",
    ) -> Rejection:
        self.metrics.rejected[error.reason] += 1
        return Rejection.from_error(error, sender, topic, message, payload)
