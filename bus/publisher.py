"""The publisher: contract messages out, with header, per-topic sequence and counted drops."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import structlog
import zmq

from bus.header import WIRE_VERSION, Header, encode_header
from bus.metrics import PublisherMetrics
from bus.outbox import DurableWindow
from bus.replay import ReplayServer, ReplayWindow, Window
from bus.security import Curve
from bus.sockets import DEFAULT_SOCKET_OPTIONS, SocketGroup, SocketOptions
from bus.topics import Channel, control_topic, parse_topic, topic
from leyline import REGISTRY, ContractError, Heartbeat, Message, Ready, RejectReason
from leyline.control import EarlierIncarnation

#: Upstream messages (subscriptions) read per `service()` pass: a flood cannot hold the owning
#: loop, and with the XPUB's small receive HWM (bus/sockets.py) it cannot pile up in libzmq.
MAX_UPSTREAM_PER_PASS = 1024
#: Distinct subscription prefixes tracked; a new one beyond is still answered, not tracked.
MAX_SUBSCRIPTIONS = 4096
#: Topics one heartbeat names at most; a channel with more names them in turn, so a
#: heartbeat stays small however many scopes there are (a controller's `cmd` has one per
#: worker, and every subscriber receives each heartbeat: all topics each time would cost
#: topics x subscribers per interval, quadratic in the worker count).
MAX_HEARTBEAT_TOPICS = 64
#: The longest valid prefix: `<channel>.<scope>.` with a 64-character scope.
MAX_PREFIX_BYTES = max(len(channel.value) for channel in Channel) + 66

_SUBSCRIBE = b"\x01"
_UNSUBSCRIBE = b"\x00"
_CHANNELS = {channel.value.encode(): channel for channel in Channel}

_log = structlog.get_logger("leyline.bus")


class Publisher:
    """Publishes on `<channel>.<scope>.` topics from one sender id.

    Sequences count per topic, so a subscriber filtering one scope sees them contiguous.
    A full send queue never blocks and never drops silently: the message is counted in
    `metrics.dropped` and its sequence stays used, so subscribers see the gap too.
    Call `service()` from the owning loop: it answers new subscriptions with `Ready` and sends
    heartbeats when due. Upstream input is bounded: a subscription that is not a Leyline
    prefix, a message that is not a subscription, and a new prefix beyond `MAX_SUBSCRIPTIONS`
    are refused and counted in `metrics.refused`.
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
    ) -> None:
        self.sender_id = sender_id
        self.incarnation = incarnation if incarnation is not None else clock()
        self._context = context or zmq.Context.instance()
        self._socket = SocketGroup(self._context, "xpub", options, security)
        self.address = "" if address is None else self._socket.attach(address, bind)
        self._clock = clock
        self._encoder = REGISTRY.encoder()
        self._topics: dict[tuple[Channel, str], bytes] = {}
        self._sequences: dict[bytes, int] = {}
        self._channels: set[Channel] = set()
        self._heartbeat_ns = int(heartbeat_interval_s * 1e9)
        self._next_heartbeat = 0
        #: Per channel, where the next heartbeat's turn of topics starts.
        self._heartbeat_turn: dict[Channel, int] = {}
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
            )
        self._replay_endpoint = "" if self._replay is None else self._replay.endpoint
        if self._replay is not None and replay_advertise is not None:
            # Bound on one address (often every interface), announced as one peers can reach.
            port = self._replay.endpoint.rsplit(":", 1)[1]
            self._replay_endpoint = f"tcp://{replay_advertise}:{port}"

    @property
    def replay_endpoint(self) -> str:
        """Where peers reach this publisher's replay server ("" when it keeps no window)."""
        return self._replay_endpoint

    def publish(
        self,
        channel: Channel,
        scope: str,
        message: Message,
        correlation_id: str | None = None,
    ) -> int | None:
        """Send `message`; returns its sequence, or None when a full queue dropped it."""
        key = (channel, scope)
        topic_frame = self._topics.get(key)
        if topic_frame is None:
            topic_frame = self._topics[key] = topic(channel, scope)
            self._channels.add(channel)
        sequence = self._sequences.get(topic_frame, 0) + 1
        self._sequences[topic_frame] = sequence
        header = Header(
            WIRE_VERSION, self.sender_id, self.incarnation, sequence, self._clock(), correlation_id
        )
        frames = [topic_frame, encode_header(header), self._encoder.encode(message)]
        if self._window is not None and channel is not Channel.SIG:
            # Kept even when the send fails below: a dropped message is what replay is for.
            self._window.record(topic_frame, sequence, frames[1], frames[2])
        if self._send(frames):
            self.metrics.sent[channel] += 1
            return sequence
        self.metrics.dropped[channel] += 1
        return None

    def attach(self, address: str, bind: bool) -> str:
        """Bind or connect to one more endpoint (a publisher may do both)."""
        return self._socket.attach(address, bind)

    def last_sequences(self, channel: Channel) -> dict[str, int]:
        """The last sequence sent on each topic of `channel`."""
        prefix = f"{channel.value}.".encode()
        return {t.decode(): s for t, s in self._sequences.items() if t.startswith(prefix)}

    def service(self, now_ns: int | None = None) -> None:
        """Answer new subscriptions and send heartbeats when due; never blocks.

        At most one `Ready` per channel per pass, however many subscriptions arrived: a
        subscriber needs to hear one after its subscription, not one for each of everybody's.
        """
        ready: dict[Channel, bytes] = {}
        recv = self._socket.recv
        for _ in range(MAX_UPSTREAM_PER_PASS):
            try:
                event = recv(zmq.NOBLOCK)
            except zmq.Again:
                break
            self._upstream(event, ready)
        for channel, prefix in ready.items():
            self._send_control(channel, Ready(prefix=prefix.decode(), publisher=self.sender_id))
        for dropped in self._socket.check_connections():
            self.metrics.refused[dropped.reason] += 1
            _log.warning("connection attached again", detail=dropped.detail)
        if self._replay is not None:
            self._replay.serve()
        now = now_ns if now_ns is not None else time.monotonic_ns()
        if now >= self._next_heartbeat:
            self.heartbeat()
            self._next_heartbeat = now + self._heartbeat_ns

    def heartbeat(self) -> None:
        """Announce liveness and the last sequence of the channel's topics, per channel
        (at most `MAX_HEARTBEAT_TOPICS` of them, in turn)."""
        interval_ms = self._heartbeat_ns // 1_000_000
        for channel in sorted(self._channels | self._subscribed_channels()):
            beat = Heartbeat(
                interval_ms=interval_ms,
                last_sequences=self._in_turn(channel),
                replay_endpoint=self.replay_endpoint,
                earlier=self._earlier_on(channel),
            )
            self._send_control(channel, beat)

    def _in_turn(self, channel: Channel) -> dict[str, int]:
        """The next `MAX_HEARTBEAT_TOPICS` topics of `channel`, wrapping around."""
        topics = list(self.last_sequences(channel).items())
        if len(topics) <= MAX_HEARTBEAT_TOPICS:
            return dict(topics)
        start = self._heartbeat_turn.get(channel, 0) % len(topics)
        self._heartbeat_turn[channel] = start + MAX_HEARTBEAT_TOPICS
        return dict((topics + topics)[start : start + MAX_HEARTBEAT_TOPICS])

    def _earlier_on(self, channel: Channel) -> list[EarlierIncarnation]:
        prefix = f"{channel.value}."
        found = []
        for earlier in self._earlier:
            topics = {t: s for t, s in earlier.last_sequences.items() if t.startswith(prefix)}
            if topics:
                found.append(
                    EarlierIncarnation(incarnation=earlier.incarnation, last_sequences=topics)
                )
        return found

    def wait_for_subscribers(
        self, prefix: bytes = b"", count: int = 1, timeout_s: float = 5.0
    ) -> bool:
        """Block (servicing) until `count` subscriptions covering `prefix` have arrived."""
        deadline = time.monotonic() + timeout_s
        while self._covering(prefix) < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self._socket.poll(int(min(remaining, 0.05) * 1000), zmq.POLLIN)
            self.service()
        return True

    def close(self) -> None:
        self._socket.close()
        if self._replay is not None:
            self._replay.close()
        if isinstance(self._window, DurableWindow):
            self._window.close()

    def _covering(self, prefix: bytes) -> int:
        return sum(n for sub, n in self.subscriptions.items() if prefix.startswith(sub))

    def _subscribed_channels(self) -> set[Channel]:
        found: set[Channel] = set()
        for prefix, count in self.subscriptions.items():
            if count:
                found.update(_channels_of(prefix) or ())
        return found

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

    def _send_control(self, channel: Channel, message: Heartbeat | Ready) -> None:
        header = Header(WIRE_VERSION, self.sender_id, self.incarnation, 0, self._clock())
        frames = [control_topic(channel), encode_header(header), self._encoder.encode(message)]
        if not self._send(frames):
            self.metrics.control_dropped += 1

    def _send(self, frames: list[bytes]) -> bool:
        return self._socket.send_frames(frames)


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
