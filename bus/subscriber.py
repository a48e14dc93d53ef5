"""The subscriber: every message through the enforcement pipeline, then to typed handlers."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, cast

import structlog
import zmq

from bus.identity import IdentityPolicy
from bus.metrics import SubscriberMetrics
from bus.pipeline import DEFAULT_MAX_CLOCK_SKEW_S, Envelope, Pipeline, SemanticGuard
from bus.rejection import RateLimitedLog, Rejection
from bus.security import Curve
from bus.sequence import MAX_STREAMS, Gap
from bus.sockets import DEFAULT_SOCKET_OPTIONS, SocketGroup, SocketOptions
from bus.topics import Channel, control_topic, subscription
from leyline import ContractError, Heartbeat, RejectReason

Handler = Callable[[Envelope], None]
RejectionHandler = Callable[[Rejection], None]
GapHandler = Callable[[Gap], None]
#: Called with (sender, stale, silent_for_ms) when a peer goes silent or comes back.
LivenessHandler = Callable[[str, bool, float], None]

_log = structlog.get_logger("leyline.bus")
# Plain ints: pyzmq's enum flags cost more per call than the calls themselves on this path.
_EVENTS = int(zmq.EVENTS)
_POLLIN = int(zmq.POLLIN)
_NOBLOCK = int(zmq.NOBLOCK)
_RCVMORE = int(zmq.RCVMORE)
_USER_ID = b"User-Id"


class Subscriber:
    """Receives from one or more publishers and delivers only valid, typed messages.

    `subscribe` lists (channel, scope) pairs; a scope of None takes the whole channel. The
    receive path polls once, then drains up to `batch` messages without waiting.

    With `security` every bind is a CURVE server and every connect names the server whose
    key it pins (`controller@tcp://host:port`); each message is then checked against the
    identity its connection proved (see `bus.identity`).
    """

    def __init__(
        self,
        addresses: str | Sequence[str],
        subscribe: Iterable[tuple[Channel, str | None]],
        *,
        bind: bool = False,
        context: zmq.Context[zmq.Socket[bytes]] | None = None,
        options: SocketOptions = DEFAULT_SOCKET_OPTIONS,
        guards: Mapping[Channel, SemanticGuard] | None = None,
        max_signal_age_s: float | None = None,
        stale_after_s: float = 5.0,
        batch: int = 256,
        security: Curve | None = None,
        max_clock_skew_s: float = DEFAULT_MAX_CLOCK_SKEW_S,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        wanted = list(subscribe)
        self.channels = sorted({channel for channel, _ in wanted})
        self.metrics = SubscriberMetrics()
        self.security = security
        self.pipeline = Pipeline(
            self.channels,
            guards=guards,
            max_signal_age_ns=None if max_signal_age_s is None else int(max_signal_age_s * 1e9),
            metrics=self.metrics,
            identity=None if security is None else IdentityPolicy(security.trust),
            max_clock_skew_s=max_clock_skew_s,
            clock=clock,
        )
        self._context = context or zmq.Context.instance()
        # Data prefixes first, control topics last: a control message received proves every
        # earlier subscription on the connection has reached the publisher.
        self._prefixes = [subscription(channel, scope) for channel, scope in wanted]
        self._poller = zmq.Poller()
        self._sockets = SocketGroup(self._context, "sub", options, security, self._prepare)
        self.addresses: list[str] = []
        for address in [addresses] if isinstance(addresses, str) else list(addresses):
            self.attach(address, bind)
        self._handlers: dict[Channel, list[Handler]] = {}
        self._on_rejection: list[RejectionHandler] = []
        self._on_gap: list[GapHandler] = []
        self._on_liveness: list[LivenessHandler] = []
        self._batch = batch
        self._stale_ns = int(stale_after_s * 1e9)
        self._last_seen: dict[str, int] = {}
        self._stale: set[str] = set()
        self._ready: dict[Channel, set[str]] = {channel: set() for channel in self.channels}
        self._next_liveness_check = 0
        self.log = RateLimitedLog()
        #: Where each sender answers replay requests, learned from its heartbeats.
        self.replay_endpoints: dict[str, str] = {}
        self._announced: dict[tuple[str, bytes, int], int] = {}

    def attach(self, address: str, bind: bool) -> str:
        """Bind or connect to one more endpoint (a subscriber may do both)."""
        resolved = self._sockets.attach(address, bind)
        self.addresses.append(resolved)
        return resolved

    def _prepare(self, sock: zmq.Socket[bytes]) -> None:
        for prefix in self._prefixes:
            sock.setsockopt(zmq.SUBSCRIBE, prefix)
        for channel in self.channels:
            sock.setsockopt(zmq.SUBSCRIBE, control_topic(channel))
        self._poller.register(sock, zmq.POLLIN)

    def on(self, channel: Channel, handler: Handler) -> None:
        """Deliver every valid message of `channel` to `handler`."""
        self._handlers.setdefault(channel, []).append(handler)

    def on_rejection(self, handler: RejectionHandler) -> None:
        self._on_rejection.append(handler)

    def on_gap(self, handler: GapHandler) -> None:
        self._on_gap.append(handler)

    def on_liveness(self, handler: LivenessHandler) -> None:
        self._on_liveness.append(handler)

    @property
    def sockets(self) -> list[zmq.Socket[bytes]]:
        """Every ZeroMQ socket behind this subscriber (one per server identity it connects to)."""
        return [link.socket for link in self._sockets.links]

    def poll(self, timeout_ms: int = 0) -> int:
        """Wait up to `timeout_ms` for input, then drain a batch; returns messages delivered."""
        delivered = 0
        if self._poller.poll(timeout_ms):
            delivered = self.drain()
        self.check_liveness()
        for dropped in self._sockets.check_connections():
            self.metrics.rejected[dropped.reason] += 1
            self._reject(dropped)
        return delivered

    def drain(self) -> int:
        """Process up to one batch of already-queued messages without waiting.

        ZMQ_EVENTS is asked before each receive instead of letting the last one raise
        `zmq.Again`: an exception per drain costs more than the check (bench/bus.py). A
        message's parts are whole once its first part is readable (ZeroMQ delivers a
        multipart message atomically), so the later receives never wait.
        """
        delivered = 0
        process = self.pipeline.process
        # Only a server socket's messages carry the identity to check, one per connection.
        read_identity = self.security is not None
        for link in self._sockets.links:
            sock = link.socket
            recv = cast(Callable[..., Any], sock.recv)
            option = cast(Callable[[int], int], sock.getsockopt)
            from_server = read_identity and link.peer is None
            for _ in range(self._batch):
                if not option(_EVENTS) & _POLLIN:
                    break
                peer = link.peer
                # recv_multipart, without its per-frame enum conversions (2.5 us a message).
                if from_server:
                    first = recv(_NOBLOCK, copy=False)
                    peer = _identity_of(first)
                    frames = [first.bytes]
                else:
                    frames = [recv(_NOBLOCK)]
                while option(_RCVMORE):
                    frames.append(recv(_NOBLOCK))
                outcome = process(frames, peer=peer)
                if isinstance(outcome, Rejection):
                    self._reject(outcome)
                    continue
                self._seen(outcome.header.sender)
                if outcome.is_control:
                    self._control(outcome)
                elif self._deliver(outcome):
                    delivered += 1
        if self.pipeline.tracker.gaps:
            self._report_gaps(self.pipeline.tracker.take_gaps())
        return delivered

    def replayed(self, frames: list[bytes], peer: str | None = None) -> Envelope | None:
        """Check and deliver one replayed message; a control message is returned instead.

        `peer` is the publisher whose pinned replay endpoint the frames came from.
        """
        outcome = self.pipeline.process(frames, replay=True, peer=peer)
        if isinstance(outcome, Rejection):
            self._reject(outcome)
            return None
        if outcome.is_control:
            return outcome
        self._deliver(outcome)
        return None

    def wait_ready(self, timeout_s: float = 5.0, publishers: int | Iterable[str] = 1) -> bool:
        """Process input until every subscribed channel has heard from its publishers.

        `publishers` is a count or the sender ids expected. Messages arriving meanwhile are
        delivered as usual. No sleeps: a control message on a channel proves the subscription.
        """
        expected = None if isinstance(publishers, int) else set(publishers)
        count = publishers if isinstance(publishers, int) else len(expected or ())
        deadline = time.monotonic() + timeout_s

        def ready() -> bool:
            return all(
                (expected <= heard) if expected is not None else len(heard) >= count
                for heard in self._ready.values()
            )

        while not ready():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self.poll(int(min(remaining, 0.05) * 1000) + 1)
        return True

    def run(self, should_stop: Callable[[], bool], timeout_ms: int = 100) -> None:
        """Poll until `should_stop()` is true."""
        while not should_stop():
            self.poll(timeout_ms)

    def check_liveness(self, now_ns: int | None = None) -> None:
        """Mark peers silent for longer than `stale_after_s` as stale (and back), at most 10/s."""
        now = now_ns if now_ns is not None else time.monotonic_ns()
        if now < self._next_liveness_check:
            return
        self._next_liveness_check = now + 100_000_000
        for sender, seen in self._last_seen.items():
            silent = now - seen
            if silent > self._stale_ns and sender not in self._stale:
                self._stale.add(sender)
                self._liveness(sender, True, silent / 1e6)
            elif silent <= self._stale_ns and sender in self._stale:
                self._stale.discard(sender)
                self._liveness(sender, False, silent / 1e6)
        self.metrics.stale_peers = len(self._stale)

    def stale_peers(self) -> set[str]:
        return set(self._stale)

    def close(self) -> None:
        self._sockets.close()

    def _announce(self, sender: str, topic_frame: bytes, incarnation: int, last: int) -> None:
        """An earlier life of `sender` sent up to `last` on a topic: a gap to check, once."""
        if not any(topic_frame.startswith(prefix) for prefix in self._prefixes):
            return
        key = (sender, topic_frame, incarnation)
        if self._announced.get(key, 0) >= last:
            return
        if key not in self._announced and len(self._announced) >= MAX_STREAMS:
            # Forget the oldest instead of refusing the newest: a forgotten announcement that
            # comes again is reported again (a repeat the repair dedupes), never missed.
            del self._announced[next(iter(self._announced))]
            self.metrics.announcements_forgotten += 1
        self._announced[key] = last
        self.pipeline.tracker.gaps.append(
            Gap(sender, topic_frame, incarnation, 1, last, initial=True)
        )

    def _seen(self, sender: str) -> None:
        last_seen = self._last_seen
        if sender not in last_seen and len(last_seen) >= MAX_STREAMS:
            del last_seen[next(iter(last_seen))]  # bounded under forged sender ids
        last_seen[sender] = time.monotonic_ns()

    def _deliver(self, envelope: Envelope) -> bool:
        channel = envelope.channel
        try:
            for handler in self._handlers.get(channel, ()):
                handler(envelope)
        except Exception as exc:  # a handler's bug must not kill the subscriber
            _log.exception("handler failed", topic=envelope.topic.decode(errors="replace"))
            error = ContractError(RejectReason.HANDLER_ERROR, f"{type(exc).__name__}: {exc}")
            rejection = Rejection.from_error(
                error, envelope.header.sender, envelope.topic, envelope.message
            )
            self.metrics.rejected[RejectReason.HANDLER_ERROR] += 1
            self._reject(rejection)
            return False
        self.metrics.delivered[channel] += 1
        return True

    def _control(self, envelope: Envelope) -> None:
        self._ready[envelope.channel].add(envelope.header.sender)
        message = envelope.message
        if not isinstance(message, Heartbeat):
            return
        self.metrics.heartbeats += 1
        tracker = self.pipeline.tracker
        header = envelope.header
        if message.replay_endpoint:
            self.replay_endpoints[header.sender] = message.replay_endpoint
        for earlier in message.earlier:
            for name, last in earlier.last_sequences.items():
                self._announce(header.sender, name.encode(), earlier.incarnation, last)
        for name, last in message.last_sequences.items():
            topic_frame = name.encode()
            if any(topic_frame.startswith(prefix) for prefix in self._prefixes):
                tracker.advance(header.sender, topic_frame, header.incarnation, last)

    def _reject(self, rejection: Rejection) -> None:
        self.log.log(rejection)
        for handler in self._on_rejection:
            try:
                handler(rejection)
            except Exception:
                _log.exception("rejection handler failed")

    def _report_gaps(self, gaps: list[Gap]) -> None:
        for gap in gaps:
            if not gap.initial:
                self.metrics.gaps += 1
                self.metrics.missing += gap.size
            for handler in self._on_gap:
                handler(gap)

    def _liveness(self, sender: str, stale: bool, silent_ms: float) -> None:
        for handler in self._on_liveness:
            handler(sender, stale, silent_ms)


def _identity_of(frame: zmq.Frame) -> str:
    """The ZAP User-Id of the connection a message came over ("" when it has none)."""
    try:
        identity: str = frame.get(_USER_ID)
    except zmq.ZMQError:
        return ""
    return identity
