"""The live side of `leyline record`: every delivered message into a recording, gaps repaired.

A recorder that joins late, or misses messages while a connection settles, learns of the gap
from the sequence or the next heartbeat; it asks the publisher's replay window for what it
missed, as the sink does, so a recording holds every kept message of the run. Fast signals
have no window (they are superseded, not repaired): their gaps stay counted in the summary.
"""

from __future__ import annotations

import json
import time
from typing import Any

from bus import Channel, Envelope, Gap, Rejection, Subscriber
from bus.replay import ReplayClient
from leyline import ReplayRequest
from services.observer.recording import RecordingWriter

_SIG = Channel.SIG.value.encode()
#: How long a gap waits for its publisher's replay endpoint (heartbeats come every second).
GIVE_UP_AFTER_S = 5.0


class Recorder:
    """Writes what `subscriber` delivers into `writer`, each message once."""

    def __init__(self, subscriber: Subscriber, writer: RecordingWriter) -> None:
        self.subscriber = subscriber
        self.writer = writer
        self.replay = ReplayClient(security=subscriber.security)
        self._seen: set[tuple[str, bytes, int, int]] = set()
        #: Gaps to ask for, each with the monotonic time after which it is given up.
        self._wanted: list[tuple[Gap, float]] = []
        self.repairs_asked = 0
        self.rejected: dict[str, int] = {}
        self.started_ns = time.time_ns()
        for channel in subscriber.channels:
            subscriber.on(channel, self._write)
        subscriber.on_gap(self._missed)
        subscriber.on_rejection(self._rejected)

    def tick(self) -> None:
        """Ask for what went missing; take in the replies."""
        waiting, self._wanted = self._wanted, []
        now = time.monotonic()
        for gap, give_up in waiting:
            endpoint = self.subscriber.replay_endpoints.get(gap.sender)
            request = ReplayRequest(
                topic=gap.topic.decode(),
                incarnation=gap.incarnation,
                first=gap.first,
                last=gap.last,
            )
            if endpoint is not None and self.replay.request(gap.sender, endpoint, request):
                self.repairs_asked += 1
            elif now < give_up:
                self._wanted.append((gap, give_up))  # its next heartbeat names the endpoint
        for replayed in self.replay.drain():
            self.subscriber.replayed(replayed.frames, replayed.peer)

    def _missed(self, gap: Gap) -> None:
        if not gap.topic.startswith(_SIG):
            self._wanted.append((gap, time.monotonic() + GIVE_UP_AFTER_S))

    def _write(self, envelope: Envelope[Any]) -> None:
        header = envelope.header
        key = (header.sender, envelope.topic, header.incarnation, header.sequence)
        if key in self._seen:
            return
        self._seen.add(key)
        self.writer.write(envelope, time.time_ns())

    def _rejected(self, rejection: Rejection) -> None:
        name = rejection.reason.name.lower()
        self.rejected[name] = self.rejected.get(name, 0) + 1

    def close(self) -> dict[str, str]:
        """Finish the file; returns the summary written into it."""
        self.tick()
        metrics = self.subscriber.metrics
        summary = {
            "messages": str(self.writer.messages),
            "started_ns": str(self.started_ns),
            "stopped_ns": str(time.time_ns()),
            "gaps": str(metrics.gaps),
            "missing": str(metrics.missing),
            "repairs_asked": str(self.repairs_asked),
            "rejected": json.dumps(self.rejected, sort_keys=True),
        }
        self.writer.close(summary)
        self.replay.close()
        return summary
