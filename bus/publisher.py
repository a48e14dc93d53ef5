"""The publisher: contract messages out, one frame per message or per burst to one topic.

Each message gets the header (sender, incarnation, per-topic sequence, send time) and a
budget-checked encode. Messages published back to back to one topic are coalesced into one
wire frame (bus/header.py), so a burst pays the per-frame costs (a send here; a receive,
identity read and header check at every subscriber) once per batch instead of once per
message. A lone message is sent at once: nothing waits unless a burst is under way.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import structlog
import zmq

from bus.header import TERMINATOR, array_prefix, encode_head
from bus.metrics import PublisherMetrics
from bus.outbox import DurableWindow
from bus.rejection import Rejection
from bus.replay import ReplayServer, ReplayWindow, Window
from bus.security import Curve
from bus.sockets import DEFAULT_SOCKET_OPTIONS, SocketGroup, SocketOptions
from bus.topics import HEARTBEAT_TOPIC, Channel, control_topic, parse_topic, topic
from leyline import ContractError, Heartbeat, Message, Ready, RejectReason
from leyline.control import EarlierIncarnation
from leyline.wire import REGISTRY

#: Upstream messages (subscriptions) read per `service()` pass: a flood cannot hold the owning
#: loop, and with the XPUB's small receive HWM (bus/sockets.py) it cannot pile up in libzmq.
MAX_UPSTREAM_PER_PASS = 1024
#: Distinct subscription prefixes tracked; a new one beyond is still answered, not tracked.
MAX_SUBSCRIPTIONS = 4096
#: Topics one heartbeat names at most; a publisher with more names them in turn, so a
#: heartbeat stays small however many scopes there are (a controller's `cmd` has one per
#: worker, and every subscriber receives each heartbeat: all topics each time would cost
#: topics x subscribers per interval, quadratic in the worker count).
MAX_HEARTBEAT_TOPICS = 64
#: `Ready` deliveries a second at most, summed over a channel's subscribers: a publisher with
#: 1,024 of them answers new subscriptions on it every 0.5 s (a heartbeat proves them within
#: 1 s anyway), one with 16 every 8 ms (about every pass).
READY_DELIVERIES_PER_S = 2_000
#: The longest valid prefix: `<channel>.<scope>.` with a 64-character scope.
MAX_PREFIX_BYTES = max(len(channel.value) for channel in Channel) + 66
#: A batch is sent once it holds this many messages or bytes: enough that the per-frame
#: costs vanish (bench/bus.py), small enough that a send queue of 10,000 frames stays bounded.
BATCH_MESSAGES = 64
BATCH_BYTES = 16_384
#: A message published within this long of the previous one to the same topic joins a batch;
#: a message after a longer pause is sent at once.
BURST_GAP_S = 50e-6
#: How long the publisher's own thread lets a burst's batch fill before sending it: the longest
#: a burst's last batch waits.
BATCH_LINGER_S = 0.002
#: How often the thread services an idle publisher (subscriptions answered, heartbeats on
#: time): rarely enough that it seldom holds the GIL when a lone message arrives.
IDLE_INTERVAL_S = 0.02

_SUBSCRIBE = b"\x01"
_UNSUBSCRIBE = b"\x00"
_CHANNELS = {channel.value.encode(): channel for channel in Channel}

_log = structlog.get_logger("leyline.bus")


class _Batch:
    """Messages to one topic waiting to go out as one frame, encoded into one buffer."""

    __slots__ = (
        "body",
        "budget",
        "channel",
        "count",
        "first",
        "kind",
        "prefix",
        "scope",
        "sent_ns",
        "topic",
    )

    def __init__(
        self,
        channel: Channel,
        scope: str,
        topic: bytes,
        prefix: bytes,
        first: int,
        sent_ns: int,
        kind: type | None,
        budget: int,
    ) -> None:
        self.channel = channel
        self.scope = scope
        self.topic = topic
        self.prefix = prefix
        self.first = first
        self.sent_ns = sent_ns
        #: The type a next message to its topic may be of to go straight in (None: each
        #: must be recorded for replay first), and that type's budget.
        self.kind = kind
        self.budget = budget
        self.count = 0
        #: The messages' msgpack, back to back: the batch body less its array header.
        self.body = bytearray()


class Publisher:
    """Publishes on `<channel>.<scope>.` topics from one sender id.

    Sequences count per topic, so a subscriber filtering one scope sees them contiguous.
    A full send queue never blocks and never drops silently: the message (or every message of
    the batch) is counted in `metrics.dropped` and its sequence stays used, so subscribers see
    the gap too. A thread of the publisher's own (`background`, on by default) answers new
    subscriptions with `Ready`, sends heartbeats, answers replay requests and sends a burst's
    last batch; `service()` does the same for a caller that runs without it. One lock
    serialises every use of the sockets, so `publish` may be called from any thread. Upstream
    input is bounded: a subscription that is not a Leyline prefix, a message that is not a
    subscription, and a new prefix beyond `MAX_SUBSCRIPTIONS` are refused and counted in
    `metrics.refused`.
    """

    def __init__(
        self,
        address: str | None,
        sender_id: str,
        *,
        bind: bool = True,
        context: zmq.Context[zmq.Socket[bytes]] | None = None,
        options: SocketOptions = DEFAULT_SOCKET_OPTIONS,
        heartbeat_interval_s: float = 1.0,
        incarnation: int | None = None,
        clock: Callable[[], int] = time.time_ns,
        replay_window: int = 0,
        replay_address: str = "tcp://127.0.0.1:*",
        replay_advertise: str | None = None,
        replay_store: str | Path | None = None,
        security: Curve | None = None,
        batch_messages: int = BATCH_MESSAGES,
        batch_bytes: int = BATCH_BYTES,
        background: bool = True,
    ) -> None:
        self.sender_id = sender_id
        self._sender = sender_id.encode()
        self.incarnation = incarnation if incarnation is not None else clock()
        self._context = context or zmq.Context.instance()
        self._lock = threading.Lock()
        self._socket = SocketGroup(self._context, "xpub", options, security)
        self.address = "" if address is None else self._socket.attach(address, bind)
        self._clock = clock
        self._encoder = REGISTRY.encoder()
        self._unchecked_into = self._encoder.unchecked_into
        # Bound once: `with lock` costs more than the fast path it guards (bench/bus.py).
        self._lock_acquire, self._lock_release = self._lock.acquire, self._lock.release
        self._topics: dict[tuple[Channel, str], bytes] = {}
        self._prefixes: dict[bytes, bytes] = {}
        self._sequences: dict[bytes, int] = {}
        self._heartbeat_ns = int(heartbeat_interval_s * 1e9)
        self._next_heartbeat = 0
        self._next_connection_check = 0
        self._batch_messages = max(1, batch_messages)
        self._batch_bytes = batch_bytes
        self._batch: _Batch | None = None
        self._last_topic = b""
        self._last_publish_ns = 0
        self._burst_gap_ns = int(BURST_GAP_S * 1e9)
        #: Per channel, the subscription a `Ready` is still owed for, and when one may go.
        self._ready_waiting: dict[Channel, bytes] = {}
        self._ready_due: dict[Channel, int] = {}
        #: Where the next heartbeat's turn of topics starts.
        self._heartbeat_turn = 0
        self.subscriptions: dict[bytes, int] = {}
        self.metrics = PublisherMetrics()
        self._window: Window | None = None
        self._replay: ReplayServer | None = None
        self._earlier: list[EarlierIncarnation] = []
        if replay_window > 0:
            if replay_store is None:
                self._window = ReplayWindow(replay_window, self.incarnation)
            else:
                durable = DurableWindow(replay_store, replay_window, self.incarnation)
                self._earlier = [
                    EarlierIncarnation(incarnation=old, last_sequences=topics)
                    for old, topics in sorted(durable.earlier.items())
                ]
                self._window = durable
            self._replay = ReplayServer(
                self._context,
                replay_address,
                self._window,
                sender_id,
                self.incarnation,
                security=security,
                options=options,
            )
        self._replay_endpoint = "" if self._replay is None else self._replay.endpoint
        if self._replay is not None and replay_advertise is not None:
            # Bound on one address (often every interface), announced as one peers can reach.
            port = self._replay.endpoint.rsplit(":", 1)[1]
            self._replay_endpoint = f"tcp://{replay_advertise}:{port}"
        self._closed = False
        self._stopping = threading.Event()
        #: Set when a batch starts: the thread sends it after `BATCH_LINGER_S`.
        self._batch_started = threading.Event()
        self._thread: threading.Thread | None = None
        if background:
            self._thread = threading.Thread(
                target=self._serve_forever, name=f"leyline-publisher-{sender_id}", daemon=True
            )
            self._thread.start()

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def replay_endpoint(self) -> str:
        """Where peers reach this publisher's replay server ("" when it keeps no window)."""
        return self._replay_endpoint

    def publish(
        self,
        channel: Channel,
        message: Message,
        scope: str | None = None,
        correlation_id: str | None = None,
    ) -> int | None:
        """Send `message` (or add it to the burst under way) on `channel`, scoped to this
        publisher's sender id unless told otherwise; returns its sequence.

        None when a full queue dropped it at once; a batched message's drop is counted in
        `metrics.dropped` when its batch goes out.
        """
        scope = self.sender_id if scope is None else scope
        self._lock_acquire()
        try:
            batch = self._batch
            if (
                batch is not None
                and batch.kind is type(message)
                and batch.channel is channel
                and batch.scope == scope
                and correlation_id is None
            ):
                # The burst goes on (the commonest case under load): straight into its
                # buffer, topic, sequence, send time and budget resolved when it began.
                body = batch.body
                start = len(body)
                try:
                    self._unchecked_into(message, body, start)
                except BaseException:
                    del body[start:]
                    raise
                size = len(body) - start
                if size > batch.budget:
                    del body[start:]
                    self._encoder.check(message, size)  # raises the BudgetError
                batch.count += 1
                if batch.count >= self._batch_messages or len(body) >= self._batch_bytes:
                    self._flush()
                    self._last_publish_ns = time.monotonic_ns()  # a burst: the next one joins
                return batch.first + batch.count - 1
            return self._publish(channel, scope, message, correlation_id, False)
        finally:
            self._lock_release()

    def publish_many(
        self, channel: Channel, messages: Iterable[Message], scope: str | None = None
    ) -> int:
        """Send `messages` to one topic as few frames as the batch bounds allow (scoped as
        `publish` scopes); returns how many were published."""
        scope = self.sender_id if scope is None else scope
        count = 0
        with self._lock:
            for message in messages:
                self._publish(channel, scope, message, None, True)
                count += 1
            self._flush()
        return count

    def flush(self) -> None:
        """Send the batch under way now (the publisher's thread would within a few ms)."""
        with self._lock:
            self._flush()

    def _publish(
        self,
        channel: Channel,
        scope: str,
        message: Message,
        correlation_id: str | None,
        burst: bool,
    ) -> int | None:
        """One message out, or into a batch; the lock is held.

        A sequence is used only once its message is encoded, so a message refused at encode
        (over budget) leaves no gap.
        """
        batch = self._batch
        now = time.monotonic_ns()
        key = (channel, scope)
        topic_frame = self._topics.get(key)
        if topic_frame is None:
            topic_frame = self._topics[key] = topic(channel, scope)
            self._prefixes[topic_frame] = topic_frame + TERMINATOR
        correlation = b"" if correlation_id is None else correlation_id.encode()
        if batch is not None and (batch.topic is not topic_frame or correlation):
            self._flush()
            batch = None
        if batch is None:
            sequence = self._sequences.get(topic_frame, 0) + 1
            sent_ns = self._clock()
        else:
            # A batch's messages go out with its first one's time: no clock read per message.
            sequence, sent_ns = batch.first + batch.count, batch.sent_ns
        window = self._window
        recorded = window is not None and channel is not Channel.SIG
        payload = self._encoder.encode(message)
        if recorded:
            assert window is not None
            # Kept even when the send fails below: a dropped message is what replay is for.
            # The header is the one a subscriber sees, so a replay reads the same.
            head = encode_head(self._sender, self.incarnation, sequence, sent_ns, 1, correlation)
            window.record(topic_frame, sequence, head, payload)
        bursting = burst or (
            topic_frame is self._last_topic and now - self._last_publish_ns < self._burst_gap_ns
        )
        self._last_topic, self._last_publish_ns = topic_frame, now
        if batch is None and (correlation or not bursting or self._batch_messages == 1):
            self._sequences[topic_frame] = sequence
            head = encode_head(self._sender, self.incarnation, sequence, sent_ns, 1, correlation)
            if self._socket.send_frame(b"".join((self._prefixes[topic_frame], head, payload))):
                self.metrics.sent[channel] += 1
                return sequence
            self.metrics.dropped[channel] += 1
            return None
        if batch is None:
            prefix = self._prefixes[topic_frame]
            kind = None if recorded else type(message)
            budget = self._encoder.budget(type(message)) or 0
            batch = self._batch = _Batch(
                channel, scope, topic_frame, prefix, sequence, sent_ns, kind, budget
            )
            if self._thread is not None:
                self._batch_started.set()
        batch.body += payload
        batch.count += 1
        if batch.count >= self._batch_messages or len(batch.body) >= self._batch_bytes:
            self._flush()
        return sequence

    def _flush(self) -> None:
        batch = self._batch
        if batch is None:
            return
        self._batch = None
        count = batch.count
        last = batch.first + count - 1
        self._sequences[batch.topic] = last
        head = encode_head(self._sender, self.incarnation, batch.first, batch.sent_ns, count)
        if count == 1:
            frame = b"".join((batch.prefix, head, batch.body))
        else:
            frame = b"".join((batch.prefix, head, array_prefix(count), batch.body))
        if self._socket.send_frame(frame):
            self.metrics.sent[batch.channel] += count
        else:
            self.metrics.dropped[batch.channel] += count

    def attach(self, address: str, bind: bool) -> str:
        """Bind or connect to one more endpoint (a publisher may do both)."""
        with self._lock:
            return self._socket.attach(address, bind)

    def last_sequences(self, channel: Channel) -> dict[str, int]:
        """The last sequence sent on each topic of `channel`."""
        prefix = f"{channel.value}.".encode()
        found = {t.decode(): s for t, s in self._sequences.items() if t.startswith(prefix)}
        batch = self._batch
        if batch is not None and batch.channel is channel:  # sequenced, not yet sent
            found[batch.topic.decode()] = batch.first + batch.count - 1
        return found

    def service(self, now_ns: int | None = None) -> None:
        """Answer new subscriptions, send a waiting batch and heartbeats when due; never
        blocks. The publisher's own thread calls it every few ms; callers may too."""
        with self._lock:
            self._service(now_ns)

    def _serve_forever(self) -> None:
        while not self._stopping.is_set():
            if self._batch_started.wait(IDLE_INTERVAL_S):
                self._batch_started.clear()
                self._stopping.wait(BATCH_LINGER_S)  # the burst's batch fills meanwhile
            if not self._acquire():
                continue
            try:
                if self._closed:
                    return
                self._service(None)
            except Exception:  # the thread outlives any one bad pass, and says so
                _log.exception("publisher service pass failed", sender=self.sender_id)
            finally:
                self._lock.release()

    def _acquire(self) -> bool:
        """Take the lock between two of the caller's publishes, never waiting on it inside
        one: a thread blocked on the lock makes the caller hand over the GIL at every publish
        of a burst (a convoy that halves throughput). A caller that keeps it busy is
        bursting, and sends its own full batches; the pass comes again soon."""
        for _ in range(50):
            if self._lock.acquire(blocking=False):
                return True
            if self._stopping.wait(0.0002):
                return False
        return self._lock.acquire(timeout=IDLE_INTERVAL_S)

    def _service(self, now_ns: int | None) -> None:
        """One pass; the lock is held.

        At most one `Ready` per channel per pass, however many subscriptions arrived: a
        subscriber needs to hear one after its subscription, not one for each of everybody's.
        And not more often than its fan-out allows (`READY_DELIVERIES_PER_S`).
        """
        self._flush()
        ready = self._ready_waiting
        recv = self._socket.recv
        for _ in range(MAX_UPSTREAM_PER_PASS):
            event = recv()
            if event is None:
                break
            self._upstream(event, ready)
        now = now_ns if now_ns is not None else time.monotonic_ns()
        if ready:
            self._answer(ready, now)
        if now >= self._next_connection_check:
            # ~3 us a call: at most 10 times a second (the thread passes every 2 ms).
            self._next_connection_check = now + 100_000_000
            for refused in self._socket.check_connections():
                self._count_refused(refused)
        if self._replay is not None:
            self._replay.serve()
        if now >= self._next_heartbeat:
            self._heartbeat()
            self._next_heartbeat = now + self._heartbeat_ns

    def _answer(self, ready: dict[Channel, bytes], now: int) -> None:
        """Send the waiting `Ready` of each channel whose fan-out allows one now.

        A Ready goes to every subscriber of its channel's control topic, so it costs as many
        deliveries as there are: answering every pass, N subscribers connecting one after
        another each received O(N) of them (130 each at 256, with a subscriber every 20 ms),
        O(N^2) in all, CURVE-encrypted by the publisher's I/O thread and decoded by every
        receiver. The next Ready on a channel waits `subscribers / READY_DELIVERIES_PER_S`
        (never longer than a heartbeat interval: the heartbeat proves a subscription too).
        """
        for channel, prefix in list(ready.items()):
            if now < self._ready_due.get(channel, 0):
                continue
            del ready[channel]
            control = control_topic(channel)
            subscribers = self.subscriptions.get(control, 0) + self.subscriptions.get(b"", 0)
            wait = min(subscribers * 1_000_000_000 // READY_DELIVERIES_PER_S, self._heartbeat_ns)
            self._ready_due[channel] = now + wait
            self._send_control(control, Ready(prefix=prefix.decode(), publisher=self.sender_id))

    def _count_refused(self, refused: Rejection) -> None:
        """Count a connection libzmq gave up on, or a handshake it refused (an untrusted key,
        a peer without CURVE); refusals are logged at the 1st, 2nd, 4th, 8th... of a reason,
        so a peer retrying forever cannot flood the log."""
        self.metrics.refused[refused.reason] += 1
        count = self.metrics.refused[refused.reason]
        if refused.reason is RejectReason.CONNECTION_DROPPED:
            _log.warning("connection attached again", detail=refused.detail)
        elif count & (count - 1) == 0:
            _log.warning(
                "handshake refused",
                sender=self.sender_id,
                reason=refused.reason.name,
                detail=refused.detail,
                refused=count,
            )

    def heartbeat(self) -> None:
        """Announce liveness and the last sequence of this publisher's topics, all channels
        in one heartbeat (at most `MAX_HEARTBEAT_TOPICS` topics, in turn)."""
        with self._lock:
            self._flush()
            self._heartbeat()

    def _heartbeat(self) -> None:
        """One heartbeat on `HEARTBEAT_TOPIC`, once there is anything to say or anyone to
        say it to: one message per interval however many channels (was one per channel)."""
        if not self._topics and not self.subscriptions:
            return
        beat = Heartbeat(
            interval_ms=self._heartbeat_ns // 1_000_000,
            last_sequences=self._in_turn(),
            replay_endpoint=self.replay_endpoint,
            earlier=self._earlier,
        )
        self._send_control(HEARTBEAT_TOPIC, beat)

    def _in_turn(self) -> dict[str, int]:
        """The next `MAX_HEARTBEAT_TOPICS` topics of every channel, wrapping around."""
        found = {t.decode(): s for t, s in self._sequences.items()}
        batch = self._batch
        if batch is not None:  # sequenced, not yet sent
            found[batch.topic.decode()] = batch.first + batch.count - 1
        topics = list(found.items())
        if len(topics) <= MAX_HEARTBEAT_TOPICS:
            return dict(topics)
        start = self._heartbeat_turn % len(topics)
        self._heartbeat_turn = start + MAX_HEARTBEAT_TOPICS
        return dict((topics + topics)[start : start + MAX_HEARTBEAT_TOPICS])

    def wait_for_subscribers(
        self, prefix: bytes = b"", count: int = 1, timeout_s: float = 5.0
    ) -> bool:
        """Block (servicing) until `count` subscriptions covering `prefix` have arrived."""
        deadline = time.monotonic() + timeout_s
        while self._covering(prefix) < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            with self._lock:
                self._socket.poll(min(remaining, 0.01), zmq.POLLIN)
                self._service(None)
        return True

    def close(self) -> None:
        """Send what is waiting, stop the publisher's thread, close its sockets."""
        self._stopping.set()
        self._batch_started.set()
        if self._thread is not None:
            self._thread.join()
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._flush()
            self._socket.close()
            if self._replay is not None:
                self._replay.close()
            if isinstance(self._window, DurableWindow):
                self._window.close()

    def _covering(self, prefix: bytes) -> int:
        return sum(n for sub, n in self.subscriptions.items() if prefix.startswith(sub))

    def _upstream(self, event: bytes, ready: dict[Channel, bytes]) -> None:
        """One message from a subscriber: a subscription, an unsubscription, or refused."""
        kind, prefix = event[:1], event[1:]
        if kind not in (_SUBSCRIBE, _UNSUBSCRIBE):
            self.metrics.refused[RejectReason.MALFORMED] += 1
            return
        channels = _channels_of(prefix)
        if channels is None:
            too_long = len(prefix) > MAX_PREFIX_BYTES
            self.metrics.refused[RejectReason.OVERSIZE if too_long else RejectReason.BAD_TOPIC] += 1
            return
        count = self.subscriptions.get(prefix, 0)
        if kind == _UNSUBSCRIBE:
            if count > 1:
                self.subscriptions[prefix] = count - 1
            elif count:
                del self.subscriptions[prefix]
            return
        if count or len(self.subscriptions) < MAX_SUBSCRIPTIONS:
            self.subscriptions[prefix] = count + 1
        else:
            self.metrics.refused[RejectReason.TOO_MANY_SUBSCRIPTIONS] += 1
        for channel in channels:
            ready[channel] = prefix

    def _send_control(self, topic_frame: bytes, message: Heartbeat | Ready) -> None:
        head = encode_head(self._sender, self.incarnation, 0, self._clock())
        frame = b"".join((topic_frame, TERMINATOR, head, self._encoder.encode(message)))
        if not self._socket.send_frame(frame):
            self.metrics.control_dropped += 1


def _channels_of(prefix: bytes) -> tuple[Channel, ...] | None:
    """The channels a valid subscription prefix covers; None when it is not a Leyline prefix.

    Valid: the empty prefix (every channel), `<channel>.`, and a topic `<channel>.<scope>.`.
    """
    if not prefix:
        return tuple(Channel)
    if len(prefix) > MAX_PREFIX_BYTES:
        return None
    head, dot, rest = prefix.partition(b".")
    channel = _CHANNELS.get(head)
    if channel is None or not dot:
        return None
    if rest:
        try:
            parse_topic(prefix)
        except ContractError:
            return None
    return (channel,)
