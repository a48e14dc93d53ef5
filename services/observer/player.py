"""The live side of `leyline play`: a recording published again, each message as its sender.

Each recorded sender gets a publisher of its own, proving that sender's key from the key
directory of the bus it plays onto: under CURVE a subscriber believes a sender only from the
holder of its key (`bus.identity`), so a player can only speak for identities whose keys it
was given. That is the design: play a run onto a fresh bus whose key directory holds the
recorded identities (a fresh `leyline up` folder, say), never into the bus it was recorded on.
Headers are new (this bus's incarnations, sequences and send times); the messages are the
recorded ones.

A recorded run is a closed loop: a worker's ack answers a command the controller sent. With
`answer_commands`, the player stands in for the workers of that loop: it holds each recorded
ack until the bus carries the command it answers (the same worker and command sequence) and
names that command's id in it, so a fresh controller hears its own commands answered.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import Any

import msgspec
import structlog

from bus import Channel, Envelope, Publisher, Subscriber
from bus.security import Curve
from leyline import AdaptationCommand, CommandAck
from services.observer.listener import TOOL_SOCKET_OPTIONS
from services.observer.recording import RecordedMessage

_log = structlog.get_logger("leyline.play")


class PlayStats(msgspec.Struct, kw_only=True):
    """What a play did."""

    published: int = 0
    dropped: int = 0
    #: Acks whose command never came within the wait (sent with their recorded id).
    unanswered: int = 0
    #: Topics no subscriber had asked for when playing began.
    unheard_topics: list[str] = msgspec.field(default_factory=list)


class Player:
    """Publishes recorded messages onto `intakes` as their senders."""

    def __init__(
        self,
        senders: Iterable[str],
        intakes: Sequence[str],
        *,
        keys_dir: str,
        insecure: bool = False,
        commands: Sequence[str] = (),
        tool_identity: str = "tool",
        answer_timeout_s: float = 10.0,
    ) -> None:
        def security(identity: str) -> Curve | None:
            return None if insecure else Curve.from_directory(keys_dir, identity)

        self.publishers: dict[str, Publisher] = {}
        for sender in sorted(set(senders)):
            publisher = Publisher(
                None,
                sender,
                security=security(sender),
                replay_window=4096,
                heartbeat_interval_s=1.0,
            )
            for address in intakes:
                publisher.attach(address, bind=False)
            self.publishers[sender] = publisher
        self.answer_timeout_s = answer_timeout_s
        self._commands: Subscriber | None = None
        #: (worker, command sequence) -> the live command's id, from the bus.
        self.live_commands: dict[tuple[str, int], str] = {}
        if commands:
            self._commands = Subscriber(
                list(commands),
                [(Channel.CMD, None)],
                options=TOOL_SOCKET_OPTIONS,
                security=security(tool_identity),
            )
            self._commands.on(Channel.CMD, self._on_command)
        self.stats = PlayStats()

    def wait_for_subscribers(
        self, messages: Sequence[RecordedMessage], timeout_s: float, settle_s: float = 1.0
    ) -> None:
        """Until every topic to be played has a subscriber, or `timeout_s` has passed, or
        `settle_s` has passed since the last topic found one (the rest nobody subscribes to:
        a sink takes no fast signals, a controller no telemetry)."""
        wanted = {(m.header.sender, m.topic.encode()) for m in messages}
        now = time.monotonic()
        deadline, settled = now + timeout_s, None
        while wanted and now < deadline and (settled is None or now < settled):
            self.pump(0.02)
            heard = {
                (sender, topic)
                for sender, topic in wanted
                if self.publishers[sender].wait_for_subscribers(topic, 1, 0.0)
            }
            now = time.monotonic()
            if heard:
                wanted -= heard
                settled = now + settle_s
        self.stats.unheard_topics = sorted(topic.decode() for _, topic in wanted)
        if self._commands is not None:
            self._commands.wait_ready(max(0.0, deadline - time.monotonic()))

    def play(
        self, messages: Sequence[RecordedMessage], speed: float | None, answer: bool
    ) -> PlayStats:
        """Publish `messages` in order: at `speed` times the recorded pace (None: at once)."""
        if not messages:
            return self.stats
        first_ns = messages[0].header.sent_ns
        started = time.monotonic()
        for recorded in messages:
            if speed is not None:
                due = started + (recorded.header.sent_ns - first_ns) / 1e9 / speed
                while (left := due - time.monotonic()) > 0:
                    self.pump(min(left, 0.05))
            message = recorded.message
            if answer and isinstance(message, CommandAck) and message.sequence > 0:
                message = self._answering(message)
            publisher = self.publishers[recorded.header.sender]
            sent = publisher.publish(
                recorded.channel, message, recorded.scope, recorded.header.correlation_id
            )
            if sent is None:
                self.stats.dropped += 1
            else:
                self.stats.published += 1
            publisher.service()
        return self.stats

    def pump(self, seconds: float) -> None:
        """Heartbeats and subscriptions of every publisher; the commands heard; then wait."""
        for publisher in self.publishers.values():
            publisher.service()
        if self._commands is not None:
            self._commands.poll(max(0.0, seconds))
        elif seconds > 0:
            time.sleep(seconds)

    def _answering(self, ack: CommandAck) -> CommandAck:
        key = (ack.worker_id, ack.sequence)
        deadline = time.monotonic() + self.answer_timeout_s
        while key not in self.live_commands and time.monotonic() < deadline:
            self.pump(0.005)
        live = self.live_commands.get(key)
        if live is None:
            self.stats.unanswered += 1
            _log.warning("no command to answer", worker=ack.worker_id, sequence=ack.sequence)
            return ack
        return msgspec.structs.replace(ack, command_id=live)

    def _on_command(self, envelope: Envelope[Any]) -> None:
        command = envelope.message
        if isinstance(command, AdaptationCommand):  # not a farewell's answer
            self.live_commands.setdefault((envelope.scope, command.sequence), command.command_id)

    def close(self, settle_s: float = 1.0) -> None:
        """Keep heartbeating for `settle_s` (receivers learn the last sequences), then close."""
        deadline = time.monotonic() + settle_s
        while time.monotonic() < deadline:
            self.pump(0.05)
        for publisher in self.publishers.values():
            publisher.close()
        if self._commands is not None:
            self._commands.close()
