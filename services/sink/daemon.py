"""The sink process: everything on tel, cmd, ack and rep into SQLite, in batched commits."""

from __future__ import annotations

import time

import structlog

from bus import Channel, Envelope, Gap
from leyline import TelemetryEvent
from services.node import Node
from services.sink.rows import StorableMessage, StoredMessage
from services.sink.store import TelemetryStore

_log = structlog.get_logger("leyline.sink")
AUDITED = (Channel.TEL, Channel.CMD, Channel.ACK, Channel.REP)


class SinkDaemon:
    """Buffers valid messages and commits them every `batch_size` or `flush_interval_s`.

    Nothing counts as stored before its transaction commits. A sequence gap the bus reports
    becomes an explicit loss row, so holes in the record are never silent.
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
        self._gaps: list[Gap] = []
        self._next_flush = time.monotonic_ns() + self._flush_ns
        self.stored = 0
        self.duplicates = 0
        for channel in AUDITED:
            node.subscriber.on(channel, self._receive)
        node.subscriber.on_gap(self._gaps.append)
        node.emit = self._store_own  # type: ignore[method-assign]

    def tick(self) -> None:
        """Commit when the batch is full or the flush interval has passed."""
        if len(self._pending) >= self._batch_size or time.monotonic_ns() >= self._next_flush:
            self.flush()

    def flush(self) -> None:
        if self._pending:
            batch, self._pending = self._pending, []
            result = self.store.write_batch(batch)
            self.stored += result.stored
            self.duplicates += result.duplicates
        for gap in self._gaps:
            channel = gap.topic.split(b".", 1)[0].decode()
            reason = "joined_late" if gap.initial else "sequence_gap"
            self.store.record_loss(
                gap.sender,
                channel,
                gap.first,
                gap.last,
                reason,
                topic=gap.topic.decode(),
                incarnation=gap.incarnation,
            )
        self._gaps.clear()
        self._next_flush = time.monotonic_ns() + self._flush_ns

    def run(self) -> None:
        self.node.run(self.tick)
        self.flush()

    def _receive(self, envelope: Envelope) -> None:
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
