"""What every service process shares: its bus endpoints, telemetry of its own, and its loop."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import structlog

from bus import (
    Channel,
    MetricsServer,
    Publisher,
    Rejection,
    SemanticGuard,
    SocketOptions,
    Subscriber,
)
from bus.rejection import TokenBucket
from bus.security import Curve
from bus.sockets import DEFAULT_SOCKET_OPTIONS
from leyline import (
    AckReason,
    AdaptationCommand,
    Message,
    Severity,
    TelemetryEvent,
    TelemetryEventType,
)
from leyline.telemetry import MAX_LIVENESS_PEERS, ContractViolation, PeerLiveness, PeerSilence

_log = structlog.get_logger("leyline.node")


class Transport(Protocol):
    """Where a node's publisher and subscriber come from: the real sockets (`SocketBus`) or
    `bus.testing.InProcessBus`, whose endpoints share one context over inproc://."""

    def publisher(self, sender_id: str, **options: Any) -> Publisher: ...

    def subscriber(
        self, subscribe: Iterable[tuple[Channel, str | None]], **options: Any
    ) -> Subscriber: ...


class SocketBus:
    """The real bus: endpoints on ZeroMQ's global context, bound and connected by address."""

    def publisher(self, sender_id: str, **options: Any) -> Publisher:
        return Publisher(None, sender_id, **options)

    def subscriber(
        self, subscribe: Iterable[tuple[Channel, str | None]], **options: Any
    ) -> Subscriber:
        return Subscriber([], subscribe, **options)


class Node:
    """One process on the bus: a publisher, a subscriber, and the loop that services both.

    Rejections and peers going silent become telemetry events of this node (rate-limited, so
    a hostile flood cannot turn into a telemetry flood), so the sink records them. `bus` makes
    the endpoints (default: real sockets); with an `InProcessBus` a whole service runs in one
    process, connected with `InProcessBus.connect(node.publisher, other.subscriber)`.
    `incarnation` (default: the clock's time) and `clock` (send times, ages) are the
    service's own (`services.clock`): a restart on a host whose clock went back stays later.
    """

    def __init__(
        self,
        node_id: str,
        *,
        subscribe: Iterable[tuple[Channel, str | None]],
        publish_bind: Sequence[str] = (),
        publish_connect: Sequence[str] = (),
        subscribe_bind: Sequence[str] = (),
        subscribe_connect: Sequence[str] = (),
        guards: Mapping[Channel, SemanticGuard] | None = None,
        options: SocketOptions | None = None,
        heartbeat_s: float = 1.0,
        stale_after_s: float = 5.0,
        max_signal_age_s: float | None = None,
        metrics_port: int | None = None,
        violation_rate: float = 20.0,
        replay_window: int = 0,
        replay_address: str = "tcp://127.0.0.1:*",
        replay_advertise: str | None = None,
        replay_store: Path | None = None,
        security: Curve | None = None,
        bus: Transport | None = None,
        incarnation: int | None = None,
        clock: Callable[[], int] = time.time_ns,
        publisher_thread: bool = True,
    ) -> None:
        options = options or DEFAULT_SOCKET_OPTIONS
        bus = bus or SocketBus()
        self.subscriber_options = options
        self.node_id = node_id
        #: How this node's sockets authenticate (None: plaintext, nothing authenticated).
        self.security = security
        self.publisher = bus.publisher(
            node_id,
            heartbeat_interval_s=heartbeat_s,
            options=options,
            replay_window=replay_window,
            replay_address=replay_address,
            replay_advertise=replay_advertise,
            replay_store=replay_store,
            security=security,
            incarnation=incarnation,
            clock=clock,
            background=publisher_thread,
        )
        for address in publish_bind:
            self.publisher.attach(address, bind=True)
        for address in publish_connect:
            self.publisher.attach(address, bind=False)
        self.subscriber = bus.subscriber(
            subscribe,
            guards=guards,
            max_signal_age_s=max_signal_age_s,
            stale_after_s=stale_after_s,
            options=options,
            security=security,
            clock=clock,
        )
        for address in subscribe_bind:
            self.subscriber.attach(address, bind=True)
        for address in subscribe_connect:
            self.subscriber.attach(address, bind=False)
        self.subscriber.on_rejection(self._report_rejection)
        #: The peers that went silent (True) or came back (False) since the last report, with
        #: how long they were silent in ms (the unit of the events that report them).
        self._liveness: dict[bool, list[tuple[str, float]]] = {True: [], False: []}
        self.subscriber.on_liveness(self._note_liveness)
        self._violations = TokenBucket(violation_rate)
        self._metrics = None
        if metrics_port is not None:
            sources = [self.subscriber.metrics.samples, self.publisher.metrics.samples]
            if security is not None:
                sources.append(security.samples)
            self._metrics = MetricsServer(sources, {"node": node_id}, metrics_port)
        self.stopping = False
        #: Where this node's own telemetry goes instead of the bus (the sink stores its own).
        self.local_telemetry: Callable[[TelemetryEvent], None] | None = None

    def publish(self, channel: Channel, message: Message, scope: str | None = None) -> int | None:
        """Publish on `channel`, scoped to this node unless told otherwise."""
        return self.publisher.publish(channel, message, scope or self.node_id)

    def emit(self, event: TelemetryEvent) -> None:
        """Publish one of this node's own telemetry events (or hand it to `local_telemetry`)."""
        if self.local_telemetry is not None:
            self.local_telemetry(event)
        else:
            self.publish(Channel.TEL, event)

    def stop(self, *_: object) -> None:
        self.stopping = True

    def handle_signals(self) -> None:
        """SIGINT and SIGTERM end the loop cleanly instead of killing the process."""
        signal.signal(signal.SIGINT, self.stop)
        signal.signal(signal.SIGTERM, self.stop)

    def pump(self, timeout_s: float = 0.0) -> int:
        """One turn of the bus: wait up to `timeout_s` and deliver what arrived, answer
        subscriptions, heartbeat."""
        delivered = self.subscriber.poll(timeout_s)
        self.report_liveness()
        self.publisher.service()
        return delivered

    def run(self, tick: Callable[[], None] | None = None, timeout_s: float = 0.05) -> None:
        """Pump the bus and call `tick` until stopped."""
        while not self.stopping:
            self.pump(timeout_s)
            if tick is not None:
                tick()

    def close(self) -> None:
        self.report_liveness()
        self.publisher.service()
        self.publisher.close()
        self.subscriber.close()
        if self._metrics is not None:
            self._metrics.close()

    def _report_rejection(self, rejection: Rejection) -> None:
        if not self._violations.take():
            return
        command = rejection.message
        payload = ContractViolation(
            reason=AckReason[rejection.reason.name],
            sender=rejection.sender[:128],
            topic=rejection.topic[:128],
            detail=rejection.detail[:1024],
            path=rejection.path[:1024],
            command_id=command.command_id if isinstance(command, AdaptationCommand) else "",
        )
        self.emit(
            TelemetryEvent(
                event_type=TelemetryEventType.CONTRACT_VIOLATION,
                payload=payload,
                severity=Severity.WARNING,
                message=f"rejected {rejection.reason.name.lower()} from {rejection.sender}"[:1024],
            )
        )

    def _note_liveness(self, sender: str, stale: bool, silent_s: float) -> None:
        self._liveness[stale].append((sender, silent_s * 1000))

    def report_liveness(self) -> None:
        """Report the peers that went silent or came back since the last report (`pump` does,
        after each poll, so once per liveness check): one log line and one event per
        `MAX_LIVENESS_PEERS` of each kind, not one per peer. When a starved host silenced
        hundreds at once, that was hundreds of durable events at the worst moment."""
        for stale, changed in self._liveness.items():
            if not changed:
                continue
            _log.warning(
                "peers silent" if stale else "peers back",
                peers=len(changed),
                first=[peer for peer, _ in changed[:8]],
            )
            for event in liveness_events(stale, changed):
                self.emit(event)
            changed.clear()


def liveness_events(stale: bool, changed: Sequence[tuple[str, float]]) -> list[TelemetryEvent]:
    """`PEER_STALE` (or `PEER_RECOVERED`) events naming every (peer, silent ms) of `changed`
    once, `MAX_LIVENESS_PEERS` to an event."""
    kind = TelemetryEventType.PEER_STALE if stale else TelemetryEventType.PEER_RECOVERED
    events = []
    for start in range(0, len(changed), MAX_LIVENESS_PEERS):
        (peer, silent_ms), *others = changed[start : start + MAX_LIVENESS_PEERS]
        payload = PeerLiveness(
            peer=peer,
            channel="*",
            silent_for_ms=silent_ms,
            others=[PeerSilence(peer=p, silent_for_ms=ms) for p, ms in others],
        )
        events.append(
            TelemetryEvent(
                event_type=kind,
                payload=payload,
                severity=Severity.WARNING if stale else Severity.INFO,
            )
        )
    return events
