"""The subscriber: every message through the enforcement pipeline, then to typed handlers."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import cast

import structlog
import zmq

from bus.metrics import SubscriberMetrics
from bus.monitor import ConnectionMonitor
from bus.pipeline import Envelope, Pipeline, SemanticGuard
from bus.rejection import RateLimitedLog, Rejection
from bus.sequence import MAX_STREAMS, Gap
from bus.sockets import DEFAULT_SOCKET_OPTIONS, SocketOptions, attach, make_socket
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


class Subscriber:
    """Receives from one or more publishers and delivers only valid, typed messages.

    `subscribe` lists (channel, scope) pairs; a scope of None takes the whole channel. The
    receive path polls once, then drains up to `batch` messages without waiting.
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
    ) -> None:
        wanted = list(subscribe)
        self.channels = sorted({channel for channel, _ in wanted})
        self.metrics = SubscriberMetrics()
        self.pipeline = Pipeline(
            self.channels,
            guards=guards,
            max_signal_age_ns=None if max_signal_age_s is None else int(max_signal_age_s * 1e9),
            metrics=self.metrics,
        )
        self._context = context or zmq.Context.instance()
        self._socket = make_socket(self._context, "sub", options)
        self._monitor = ConnectionMonitor(self._socket)
        # Data prefixes first, control topics last: a control message received proves every
        # earlier subscription on the connection has reached the publisher.
        self._prefixes = [subscription(channel, scope) for channel, scope in wanted]
        for prefix in self._prefixes:
            self._socket.setsockopt(zmq.SUBSCRIBE, prefix)
        for channel in self.channels:
            self._socket.setsockopt(zmq.SUBSCRIBE, control_topic(channel))
        endpoints = [addresses] if isinstance(addresses, str) else list(addresses)
        self.addresses = [attach(self._socket, address, bind) for address in endpoints]
        if not bind:
            for address in self.addresses:
                self._monitor.watch(address)
        self._poller = zmq.Poller()
        self._poller.register(self._socket, zmq.POLLIN)
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
        resolved = attach(self._socket, address, bind)
        self.addresses.append(resolved)
        if not bind:
            self._monitor.watch(resolved)
        return resolved

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
    def socket(self) -> zmq.Socket[bytes]:
        return self._socket

    def poll(self, timeout_ms: int = 0) -> int:
        """Wait up to `timeout_ms` for input, then drain a batch; returns messages delivered."""
        delivered = 0
        if self._poller.poll(timeout_ms):
            delivered = self.drain()
        self.check_liveness()
        for dropped in self._monitor.check():
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
        sock = self._socket
        recv = cast(Callable[[int], bytes], sock.recv)
        option = cast(Callable[[int], int], sock.getsockopt)
        process = self.pipeline.process
        for _ in range(self._batch):
            if not option(_EVENTS) & _POLLIN:
                break
            # recv_multipart, without its per-frame enum conversions (2.5 us a message).
            frames = [recv(_NOBLOCK)]
            while option(_RCVMORE):
                frames.append(recv(_NOBLOCK))
            outcome = process(frames)
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

    def replayed(self, frames: list[bytes]) -> Envelope | None:
        """Check and deliver one replayed message; a control message is returned instead."""
        outcome = self.pipeline.process(frames, replay=True)
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
        self._monitor.close()
        self._socket.close()

    def _announce(self, sender: str, topic_frame: bytes, incarnation: int, last: int) -> None:
        """An earlier life of `sender` sent up to `last` on a topic: a gap to check, once."""
        if not any(topic_frame.startswith(prefix) for prefix in self._prefixes):
            return
        key = (sender, topic_frame, incarnation)
        if self._announced.get(key, 0) >= last or len(self._announced) >= MAX_STREAMS:
            return
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
