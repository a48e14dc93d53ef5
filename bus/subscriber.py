"""The subscriber: every message through the enforcement pipeline, then to typed handlers
or to whoever pulls (`receive`, iteration, `bus.aio.messages`)."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar, overload

import msgspec
import structlog
import zmq

from bus.identity import IdentityPolicy
from bus.metrics import SubscriberMetrics
from bus.pipeline import DEFAULT_MAX_CLOCK_SKEW_S, Envelope, Outcome, Pipeline, SemanticGuard
from bus.rejection import RateLimitedLog, Rejection
from bus.security import Curve
from bus.sequence import MAX_STREAMS, Gap
from bus.sockets import DEFAULT_SOCKET_OPTIONS, Link, SocketGroup, SocketOptions, wait_ms
from bus.topics import (
    CHANNEL_CONTRACTS,
    CONTROL_SCOPE,
    HEARTBEAT_TOPIC,
    Channel,
    control_topic,
    subscription,
)
from leyline import ContractError, Heartbeat, RejectReason

if TYPE_CHECKING:  # bus.columnar imports numpy: only a subscriber taking columns pays for it
    from bus.columnar import ColumnReceiver, ColumnSink, SignalColumns

M = TypeVar("M", bound=msgspec.Struct)
Handler = Callable[[Envelope[Any]], None]
RejectionHandler = Callable[[Rejection], None]
GapHandler = Callable[[Gap], None]
#: Called with (sender, stale, silent_for_s) when a peer goes silent or comes back.
LivenessHandler = Callable[[str, bool, float], None]
#: Valid messages no handler took, kept for `receive`; beyond it the oldest go, counted.
INBOX_SIZE = 10_000

_log = structlog.get_logger("leyline.bus")
# Plain ints: pyzmq's enum flags cost more per call than the calls themselves on this path.
_NOBLOCK = int(zmq.NOBLOCK)
_USER_ID = b"User-Id"
_SIG = f"{Channel.SIG.value}.".encode()
_SIG_CONTROL = control_topic(Channel.SIG)


class Subscription:
    """One registered handler: `cancel()`, or the end of its `with` block, removes it."""

    def __init__(
        self,
        registered: list[tuple[list[Any], Any]],
        changed: Callable[[], None] | None = None,
    ) -> None:
        self._registered = registered
        self._changed = changed

    def cancel(self) -> None:
        for handlers, entry in self._registered:
            if entry in handlers:
                handlers.remove(entry)
        self._registered = []
        if self._changed is not None:
            self._changed()

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cancel()


class Subscriber:
    """Receives from one or more publishers and delivers only valid, typed messages.

    `subscribe` lists (channel, scope) pairs; a scope of None takes the whole channel. The
    receive path polls once, then drains up to `batch` frames without waiting. A valid
    message goes to the handlers registered for its channel or type (`on`); one that no
    handler took waits in an inbox for `receive` (at most `inbox` of them: beyond, the oldest
    is dropped and counted in `metrics.unclaimed_dropped`).

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
        inbox: int = INBOX_SIZE,
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
        # Data prefixes first, control topics last (the heartbeat topic among them, whatever
        # the channels): a control message received proves every data subscription on the
        # connection has reached the publisher.
        self._prefixes = [subscription(channel, scope) for channel, scope in wanted]
        self._controls = list(dict.fromkeys([*map(control_topic, self.channels), HEARTBEAT_TOPIC]))
        self._poller = zmq.Poller()
        self._sockets = SocketGroup(self._context, "sub", options, security, self._prepare)
        self.addresses: list[str] = []
        for address in [addresses] if isinstance(addresses, str) else list(addresses):
            self.attach(address, bind)
        self._handlers: dict[Channel, list[tuple[type | None, Handler]]] = {}
        #: Bumped by every registration and cancellation: delivery resolves a frame's
        #: handlers once, and again only when this moved (a handler that cancels itself).
        self._handlers_version = 0
        self._targets: dict[tuple[Channel, type], list[Handler]] = {}
        self._columns: ColumnReceiver | None = None
        self._column_sinks: list[ColumnSink] = []
        #: Rows delivered in columns so far (a drain reports its share).
        self._column_rows = 0
        self._inbox: deque[Envelope[Any]] = deque()
        self._inbox_size = inbox
        self._closed = False
        self._on_rejection: list[RejectionHandler] = []
        self._on_gap: list[GapHandler] = []
        self._on_liveness: list[LivenessHandler] = []
        self._batch = batch
        #: The ZMQ_RCVTIMEO a one-socket `poll` last set (set only when it changes).
        self._receive_timeout_ms = -1
        self._stale_ns = int(stale_after_s * 1e9)
        self._last_seen: dict[str, int] = {}
        self._stale: set[str] = set()
        self._ready: dict[Channel, set[str]] = {channel: set() for channel in self.channels}
        self._next_liveness_check = 0
        #: The last drain left frames queued, and when this subscriber last had none left:
        #: silence is judged as of then, not now (`check_liveness`).
        self._lagging = False
        self._caught_up_ns = 0
        self._next_connection_check = 0
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
        for prefix in [*self._prefixes, *self._controls]:
            sock.setsockopt(zmq.SUBSCRIBE, prefix)
        self._poller.register(sock, zmq.POLLIN)

    @overload
    def on(self, key: type[M], handler: Callable[[Envelope[M]], None]) -> Subscription: ...

    @overload
    def on(self, key: Channel, handler: Handler) -> Subscription: ...

    def on(self, key: Channel | type[Any], handler: Any) -> Subscription:
        """Deliver every valid message of a channel, or of one contract type, to `handler`.

        A type must be carried by a channel this subscriber subscribes to. Returns the
        registration: `cancel()` it (or use it as a context manager) to stop delivery.
        """
        if isinstance(key, Channel):
            channels, kind = [key], None
        else:
            channels = [c for c, carried in CHANNEL_CONTRACTS.items() if key in carried]
            channels = [c for c in channels if c in self.channels]
            if not channels:
                raise ValueError(f"no subscribed channel carries {key.__name__}")
            kind = key
        entry = (kind, handler)
        registered: list[tuple[list[Any], Any]] = []
        for channel in channels:
            handlers = self._handlers.setdefault(channel, [])
            handlers.append(entry)
            registered.append((handlers, entry))
        self._handlers_changed()
        return Subscription(registered, self._handlers_changed)

    def _handlers_changed(self) -> None:
        self._handlers_version += 1
        self._targets.clear()

    def _targets_of(self, channel: Channel, kind: type) -> list[Handler]:
        """The handlers a message of `kind` on `channel` goes to, resolved once per change."""
        targets = self._targets.get((channel, kind))
        if targets is None:
            handlers = self._handlers.get(channel) or []
            targets = [h for k, h in handlers if k is None or k is kind]
            self._targets[(channel, kind)] = targets
        return targets

    def on_columns(
        self,
        channel: Channel,
        sink: ColumnSink,
        *,
        max_rows: int | None = None,
        min_rows: int | None = None,
    ) -> Subscription:
        """Deliver the channel's valid fast signals to `sink` as blocks of rows (`SignalColumns`,
        at most `max_rows` each, or one frame's rows where a frame alone holds more) instead of
        one envelope each; `min_rows`: a drain with fewer goes the per-message way inside.
        The defaults are `bus.columnar`'s: 1,024 and 16 rows.

        Only `Channel.SIG` comes in columns. The checks, rejections and counts are the
        per-message path's (`bus.columnar`); handlers registered with `on` for the channel
        see none of its data messages while a sink is registered. A block's arrays are
        reused: `sink` copies what it keeps. The first registration's `max_rows` and `min_rows`
        hold for every sink. Returns the registration, as `on` does.
        """
        if channel is not Channel.SIG or channel not in self.channels:
            raise ValueError(f"only a subscribed {Channel.SIG.value!r} channel comes in columns")
        if self._columns is None:
            from bus.columnar import ColumnReceiver

            self._columns = ColumnReceiver(
                self.pipeline, self._deliver_columns, self._reject, max_rows, min_rows
            )
        self._column_sinks.append(sink)
        return Subscription([(self._column_sinks, sink)])

    def on_rejection(self, handler: RejectionHandler) -> Subscription:
        self._on_rejection.append(handler)
        return Subscription([(self._on_rejection, handler)])

    def on_gap(self, handler: GapHandler) -> Subscription:
        self._on_gap.append(handler)
        return Subscription([(self._on_gap, handler)])

    def on_liveness(self, handler: LivenessHandler) -> Subscription:
        self._on_liveness.append(handler)
        return Subscription([(self._on_liveness, handler)])

    @property
    def sockets(self) -> list[zmq.Socket[bytes]]:
        """Every ZeroMQ socket behind this subscriber (one per server identity it connects to)."""
        return [link.socket for link in self._sockets.links]

    def poll(self, timeout_s: float = 0.0) -> int:
        """Wait up to `timeout_s` for input, then drain a batch; returns messages delivered.

        With one socket (plaintext, or one pinned server) the wait is the receive itself,
        blocking with ZMQ_RCVTIMEO: a frame that arrives is taken by the call that woke up,
        with no poller in front of it (a poll and its Python wrapper per lone message). A
        frame of one data message goes from that receive straight to `Pipeline.lone` and
        its handler; the drain runs only when more is queued behind it.
        """
        delivered = 0
        timeout_ms = wait_ms(timeout_s)
        self._lagging = False
        links = self._sockets.links
        if len(links) == 1 and timeout_ms > 0:
            link = links[0]
            sock = link.socket
            if self._receive_timeout_ms != timeout_ms:
                sock.setsockopt(zmq.RCVTIMEO, timeout_ms)
                self._receive_timeout_ms = timeout_ms
            try:
                received = sock.recv(copy=False)
            except zmq.Again:  # nothing came in time
                pass
            else:
                column_rows = self._column_rows
                outcome = None
                if not received.more and not self._column_sinks:
                    # The lone frame of a round trip, straight to its handler; the drain
                    # (and its setup) only when more is queued behind it.
                    from_server = self.security is not None and link.peer is None
                    peer = _identity_of(received) if from_server else link.peer
                    outcome = self.pipeline.lone(received.bytes, peer)
                if outcome is None:
                    delivered = self._drain_link(link, received)
                else:
                    delivered = self._decided(outcome)
                    if link.queued():
                        delivered += self._drain_link(link, None, True)
                delivered += self._after_drain(column_rows)
        else:
            readable = self._poller.poll(timeout_ms) if timeout_ms > 0 else True
            if readable:
                delivered = self.drain(readable[0][0] if readable is not True else None)
        now = time.monotonic_ns()
        if now >= self._next_connection_check:
            # ~3 us a call: at most 10 times a second, off the latency of every message.
            self._next_connection_check = now + 100_000_000
            for dropped in self._sockets.check_connections():
                self.metrics.rejected[dropped.reason] += 1
                self._reject(dropped)
        if now >= self._next_liveness_check:
            self.check_liveness(now)
        return delivered

    def receive(self, timeout_s: float | None = 0.0) -> Envelope[Any] | None:
        """The next valid message no handler took, waiting up to `timeout_s` (None: until one
        comes or the subscriber is closed); None when none came."""
        inbox = self._inbox
        if inbox:
            return inbox.popleft()
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while not self._closed:
            remaining = 0.1 if deadline is None else deadline - time.monotonic()
            self.poll(max(0.0, min(remaining, 0.1)))
            if inbox:
                return inbox.popleft()
            if deadline is not None and remaining <= 0:
                return None
        return None

    def __iter__(self) -> Iterator[Envelope[Any]]:
        """Every valid message no handler took, as it comes, until the subscriber is closed."""
        while True:
            envelope = self.receive(None)
            if envelope is None:
                return
            yield envelope

    def drain(self, readable: zmq.Socket[bytes] | None = None) -> int:
        """Process up to one batch of already-queued frames per socket without waiting
        (`readable`: a socket a poll just found readable); returns messages delivered."""
        delivered = 0
        column_rows = self._column_rows
        self._lagging = False
        for link in self._sockets.links:
            delivered += self._drain_link(link, None, link.socket is readable)
        return delivered + self._after_drain(column_rows)

    def _drain_link(
        self, link: Link, received: zmq.Frame | None = None, known: bool = False
    ) -> int:
        """Up to one batch of one socket's frames, starting with `received` if given.

        `Link.queued` is asked before each receive instead of letting the last one raise
        `zmq.Again`: an exception per drain costs more than the check (bench/bus.py); a
        socket known to be readable skips the first ask. The receive is zero-copy, which
        gives the frame's RCVMORE (`more`) and, on a server socket, its ZAP User-Id without
        further socket calls.
        """
        delivered = 0
        pipeline = self.pipeline
        frame_of, lone = pipeline.frame, pipeline.lone
        sock = link.socket
        recv: Callable[..., zmq.Frame] = sock.recv
        queued = link.queued
        # Only a server socket's messages carry the identity to check, one per connection.
        from_server = self.security is not None and link.peer is None
        columns = self._columns if self._column_sinks else None
        for _ in range(self._batch):
            if received is None:
                if not known and not queued():
                    break
                known = False
                try:
                    received = recv(_NOBLOCK, copy=False)
                except zmq.Again:  # readable by the poll, taken by nobody else: not expected
                    break
            peer = _identity_of(received) if from_server else link.peer
            refusals = pipeline.refusals
            if received.more:
                if columns is not None:
                    columns.flush()  # what came before goes first, as it came
                outcomes = pipeline.process(_parts(received, recv), peer=peer)
                received = None
            else:
                data = received.bytes
                received = None
                if columns is not None:
                    if data.startswith(_SIG) and not data.startswith(_SIG_CONTROL):
                        columns.add(data, peer)  # decided with the drain's others
                        continue
                    columns.flush()
                outcome = lone(data, peer)
                if outcome is not None:  # one data message: decided, no list of outcomes
                    delivered += self._decided(outcome)
                    continue
                outcomes = frame_of(data, False, peer)
            first = outcomes[0]
            if pipeline.refusals == refusals and first.scope != CONTROL_SCOPE:  # type: ignore[union-attr]
                # The common frame: valid data messages only, straight to delivery.
                delivered += self._deliver_all(outcomes)  # type: ignore[arg-type]
                self._seen(first.header.sender)  # type: ignore[union-attr]
            else:
                delivered += self._sort(outcomes)
        else:  # the batch ran out before the socket did: frames still wait
            self._lagging = True
        return delivered

    def _after_drain(self, column_rows: int) -> int:
        """End a drain: the columns gathered go out, gaps found are reported; returns the
        rows delivered in columns since the count was `column_rows`."""
        delivered = 0
        if self._columns is not None and self._column_sinks:
            self._columns.flush()
            delivered = self._column_rows - column_rows
        if self.pipeline.tracker.gaps:
            self._report_gaps(self.pipeline.tracker.take_gaps())
        return delivered

    def _sort(self, outcomes: list[Outcome]) -> int:
        """A frame with refusals or control messages: each outcome to where it goes."""
        valid: list[Envelope[Any]] = []
        last = None
        for outcome in outcomes:
            if isinstance(outcome, Rejection):
                self._reject(outcome)
                continue
            last = outcome
            if outcome.scope == CONTROL_SCOPE:
                self._control(outcome)
            else:
                valid.append(outcome)
        if last is not None:
            self._seen(last.header.sender)
        return self._deliver_all(valid) if valid else 0

    def _deliver_columns(self, block: SignalColumns) -> bool:
        """Hand a block to every column sink; False (a rejection per row) when one fails."""
        count = len(block)
        try:
            for sink in self._column_sinks:
                sink(block)
        except Exception as exc:  # a sink's bug must not kill the subscriber
            _log.exception("column sink failed", rows=count)
            error = ContractError(
                RejectReason.HANDLER_ERROR, f"{type(exc).__name__}: {exc} ({count} rows)"
            )
            self.metrics.rejected[RejectReason.HANDLER_ERROR] += count
            head = block.groups[0]
            self._reject(Rejection.from_error(error, head.sender, _SIG + head.scope.encode()))
            return False
        self.metrics.delivered[Channel.SIG] += count
        self._column_rows += count
        for sender in {group.sender for group in block.groups}:
            self._seen(sender)
        return True

    def replayed(self, frames: list[bytes], peer: str | None = None) -> Envelope[Any] | None:
        """Check and deliver one replayed message; a control message is returned instead.

        `peer` is the publisher whose pinned replay endpoint the frames came from.
        """
        control = None
        for outcome in self.pipeline.process(frames, replay=True, peer=peer):
            if isinstance(outcome, Rejection):
                self._reject(outcome)
            elif outcome.is_control:
                control = outcome
            else:
                self._deliver_all([outcome])
        return control

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
            self.poll(min(remaining, 0.05) + 0.001)
        return True

    def run(self, should_stop: Callable[[], bool], timeout_s: float = 0.1) -> None:
        """Poll until `should_stop()` is true."""
        while not should_stop():
            self.poll(timeout_s)

    def check_liveness(self, now_ns: int | None = None) -> None:
        """Mark peers silent for longer than `stale_after_s` as stale (and back), at most 10/s.

        Silence is judged as of the last time this subscriber had read everything queued: a
        subscriber behind on its own input has not heard what waits there, and calling its
        peers silent for it made a controller seconds behind at 1,024 workers flag 930 of them at
        once (each a log line and a durable telemetry event: more work, further behind). One
        that never catches up judges no new silence until it does.
        """
        now = now_ns if now_ns is not None else time.monotonic_ns()
        if not self._lagging:
            self._caught_up_ns = now
        if now < self._next_liveness_check:
            return
        self._next_liveness_check = now + 100_000_000
        as_of = self._caught_up_ns
        for sender, seen in self._last_seen.items():
            silent = max(0, as_of - seen)  # heard since we last caught up: not silent
            if silent > self._stale_ns and sender not in self._stale:
                self._stale.add(sender)
                self._liveness(sender, True, silent / 1e9)
            elif silent <= self._stale_ns and sender in self._stale:
                self._stale.discard(sender)
                self._liveness(sender, False, silent / 1e9)
        self.metrics.stale_peers = len(self._stale)

    @property
    def closed(self) -> bool:
        return self._closed

    def stale_peers(self) -> set[str]:
        return set(self._stale)

    def close(self) -> None:
        self._closed = True
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

    def _deliver_all(self, envelopes: list[Envelope[Any]]) -> int:
        """Hand valid data messages of one channel to their handlers, or to the inbox when
        none takes them; returns how many were delivered.

        The handlers for a message type are resolved once per frame (and again only when a
        handler registers or cancels one meanwhile). A handler's error refuses its message
        alone, as HANDLER_ERROR; the rest are delivered.
        """
        channel = envelopes[0].channel
        if self._columns is not None and self._column_sinks and channel is Channel.SIG:
            block = self._columns.block_of(envelopes)
            return len(envelopes) if self._deliver_columns(block) else 0
        kind: type | None = None
        version = -1
        targets: list[Handler] = []
        delivered = 0
        for envelope in envelopes:
            message_kind = type(envelope.message)
            if message_kind is not kind or version != self._handlers_version:
                kind, version = message_kind, self._handlers_version
                targets = self._targets_of(channel, kind)
            if not targets:
                self._to_inbox(envelope)
                delivered += 1
                continue
            try:
                for handler in targets:
                    handler(envelope)
            except Exception as exc:  # a handler's bug must not kill the subscriber
                self._handler_failed(envelope, exc)
                continue
            delivered += 1
        self.metrics.delivered[channel] += delivered
        return delivered

    def _decided(self, outcome: Outcome) -> int:
        """A lone frame's one outcome (`Pipeline.lone`) to its handlers or, refused, to the
        rejection handlers; returns the messages delivered."""
        if type(outcome) is not Envelope:
            self._reject(outcome)  # type: ignore[arg-type]
            return 0
        delivered = self._deliver_one(outcome)
        self._seen(outcome.header.sender)
        return delivered

    def _deliver_one(self, envelope: Envelope[Any]) -> int:
        """`_deliver_all` of a frame's one data message (never a column sink's: a drain
        with sinks hands their channel's frames to `bus.columnar`)."""
        channel = envelope.channel
        targets = self._targets.get((channel, type(envelope.message)))
        if targets is None:
            targets = self._targets_of(channel, type(envelope.message))
        if not targets:
            self._to_inbox(envelope)
        else:
            try:
                for handler in targets:
                    handler(envelope)
            except Exception as exc:  # a handler's bug must not kill the subscriber
                self._handler_failed(envelope, exc)
                return 0
        self.metrics.delivered[channel] += 1
        return 1

    def _to_inbox(self, envelope: Envelope[Any]) -> None:
        """Keep a message no handler took for `receive`; a full inbox drops its oldest."""
        inbox = self._inbox
        if len(inbox) >= self._inbox_size:
            inbox.popleft()
            self.metrics.unclaimed_dropped += 1
        inbox.append(envelope)

    def _handler_failed(self, envelope: Envelope[Any], exc: Exception) -> None:
        _log.exception("handler failed", topic=envelope.topic.decode(errors="replace"))
        error = ContractError(RejectReason.HANDLER_ERROR, f"{type(exc).__name__}: {exc}")
        rejection = Rejection.from_error(
            error, envelope.header.sender, envelope.topic, envelope.message
        )
        self.metrics.rejected[RejectReason.HANDLER_ERROR] += 1
        self._reject(rejection)

    def _control(self, envelope: Envelope[Any]) -> None:
        """A Ready proves this subscriber's subscriptions on its channel; a heartbeat, on
        every channel (its topic is subscribed after every data prefix). A Ready on the
        heartbeat topic's channel, when this subscriber does not take it, proves nothing."""
        message = envelope.message
        header = envelope.header
        if not isinstance(message, Heartbeat):
            heard = self._ready.get(envelope.channel)
            if heard is not None:
                heard.add(header.sender)
            return
        for heard in self._ready.values():
            heard.add(header.sender)
        self.metrics.heartbeats += 1
        tracker = self.pipeline.tracker
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

    def _liveness(self, sender: str, stale: bool, silent_s: float) -> None:
        for handler in self._on_liveness:
            handler(sender, stale, silent_s)


def _identity_of(frame: zmq.Frame) -> str:
    """The ZAP User-Id of the connection a message came over ("" when it has none)."""
    try:
        identity: str = frame.get(_USER_ID)
    except zmq.ZMQError:
        return ""
    return identity


def _parts(first: zmq.Frame, recv: Callable[..., zmq.Frame]) -> list[bytes]:
    """Every part of a multipart message (not wire v2: the pipeline refuses it once)."""
    parts = [first.bytes]
    more = first.more
    while more:
        part = recv(_NOBLOCK, copy=False)
        parts.append(part.bytes)
        more = part.more
    return parts
