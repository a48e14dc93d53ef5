"""The sink process: everything on tel, cmd, ack and rep into SQLite, in batched commits."""

from __future__ import annotations

import time
from typing import Any

from bus import Channel, Envelope, Gap
from bus.replay import ReplayClient
from leyline import ReplayDone, TelemetryEvent
from services.node import Node
from services.sink.repair import FULLY_STORED, GapRepair
from services.sink.rows import StorableMessage, StoredMessage
from services.sink.store import TelemetryStore

AUDITED = (Channel.TEL, Channel.CMD, Channel.ACK, Channel.REP)
REPAIRED_FROM_START = frozenset(c.value.encode() for c in FULLY_STORED)


class SinkDaemon:
    """Buffers valid messages and commits them every `batch_size` or `flush_interval_s`.

    Nothing counts as stored before its transaction commits. A sequence gap the bus reports
    is replayed from the publisher's window; what the window no longer holds becomes an
    explicit loss row, so holes in the record are never silent.
    """

    def __init__(
        self,
        node: Node,
        store: TelemetryStore,
        *,
        batch_size: int = 256,
        flush_interval_s: float = 0.2,
    ) -> None:
        self.node = node
        self.store = store
        self._batch_size = batch_size
        self._flush_ns = int(flush_interval_s * 1e9)
        self._pending: list[StoredMessage] = []
        self.replay = ReplayClient(options=node.subscriber_options, security=node.security)
        self.repair = GapRepair(store, node.subscriber, self.replay)
        self._next_flush = time.monotonic_ns() + self._flush_ns
        self.stored = 0
        self.duplicates = 0
        #: Sequences recorded lost that arrived after all (their loss rows shrank).
        self.recovered = 0
        for channel in AUDITED:
            node.subscriber.on(channel, self._receive)
        node.subscriber.on_gap(self._on_gap)
        node.local_telemetry = self._store_own

    def tick(self) -> None:
        """Take in replayed messages; commit when the batch is full or the interval passed."""
        for replayed in self.replay.drain():
            done = self.node.subscriber.replayed(replayed.frames, replayed.peer)
            if done is not None and isinstance(done.message, ReplayDone):
                self.flush()  # what was replayed is committed before its gap is settled
                self.repair.settle(done.header.sender, done.message)
        if len(self._pending) >= self._batch_size or time.monotonic_ns() >= self._next_flush:
            self.flush()
            self.repair.tick()

    def flush(self) -> None:
        if self._pending:
            batch, self._pending = self._pending, []
            result = self.store.write_batch(batch)
            self.stored += result.stored
            self.duplicates += result.duplicates
            self.recovered += result.recovered
        self._next_flush = time.monotonic_ns() + self._flush_ns

    def _on_gap(self, gap: Gap) -> None:
        """Repair every gap in the middle of a stream, and the start of the streams we keep."""
        if not gap.initial or gap.topic.split(b".", 1)[0] in REPAIRED_FROM_START:
            self.repair.add(gap)

    def run(self) -> None:
        self.node.run(self.tick)
        self.flush()
        self.replay.close()

    def _receive(self, envelope: Envelope[Any]) -> None:
        message = envelope.message
        if not isinstance(message, StorableMessage):
            return
        header = envelope.header
        self._pending.append(
            StoredMessage(
                channel=envelope.channel.value,
                sender=header.sender,
                sequence=header.sequence,
                sent_ns=header.sent_ns,
                topic=envelope.topic.decode(),
                message=message,
                incarnation=header.incarnation,
            )
        )
        if len(self._pending) >= self._batch_size:
            self.flush()

    def _store_own(self, event: TelemetryEvent) -> None:
        """The sink's own events (rejections, silent peers) go straight into its store.

        Their sequence is the wall clock in ns, so a restarted sink never reuses one.
        """
        now = time.time_ns()
        self._pending.append(
            StoredMessage(
                channel=Channel.TEL.value,
                sender=self.node.node_id,
                sequence=now,
                sent_ns=now,
                topic=f"tel.{self.node.node_id}.",
                message=event,
            )
        )
