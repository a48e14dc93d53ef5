"""Gap repair: ask publishers to replay what the sink missed; record what is gone as losses.

A gap inside a publisher's replay window is refilled (stored idempotently, so a repeat is
harmless). Whatever the window no longer holds, or whoever never answers, becomes an explicit
loss row with its reason: the record may have holes, but never silent ones.
"""

from __future__ import annotations

import time

import msgspec

from bus import Channel, Gap, Subscriber
from bus.replay import ReplayClient
from leyline import ReplayDone, ReplayRequest
from services.sink.losses import LossReason
from services.sink.store import TelemetryStore

#: Channels whose every message the sink stores (hellos included on `ack`), so a replayed
#: message must show up in the store, and a stream's start is worth replaying too.
FULLY_STORED = (Channel.TEL, Channel.CMD, Channel.ACK)
_FULLY_STORED = tuple(f"{channel.value}." for channel in FULLY_STORED)
#: Replay requests per gap before what is still missing is recorded as lost.
MAX_ATTEMPTS = 3
#: Gaps waiting for a replay at once; one past it is recorded lost at once (`repair_backlog`),
#: so forged or runaway gaps cost bounded memory and never vanish without a loss row.
MAX_PENDING = 4096


class _Need(msgspec.Struct):
    sender: str
    topic: str
    incarnation: int
    first: int
    last: int
    since: float
    sent_at: float = 0.0
    attempts: int = 1


class GapRepair:
    """Requests replays for gaps and settles each as refilled or lost."""

    def __init__(
        self,
        store: TelemetryStore,
        subscriber: Subscriber,
        client: ReplayClient,
        *,
        answer_timeout_s: float = 5.0,
        endpoint_wait_s: float = 3.0,
        max_pending: int = MAX_PENDING,
    ) -> None:
        self._store = store
        self._subscriber = subscriber
        self._client = client
        self._answer_timeout = answer_timeout_s
        self._endpoint_wait = endpoint_wait_s
        self._max_pending = max_pending
        self._waiting: list[_Need] = []
        self._asked: dict[tuple[str, str, int, int], _Need] = {}
        self.requested = 0
        self.lost = 0
        #: Gaps recorded lost without a replay because `max_pending` were already waiting.
        self.refused = 0

    def add(self, gap: Gap) -> None:
        need = _Need(
            gap.sender, gap.topic.decode(), gap.incarnation, gap.first, gap.last, time.monotonic()
        )
        self._keep(self._waiting, need)

    def tick(self) -> None:
        """Send the requests that can be sent; give up on those that waited too long."""
        now = time.monotonic()
        still: list[_Need] = []
        for need in self._waiting:
            endpoint = self._subscriber.replay_endpoints.get(need.sender)
            if endpoint is None:
                if now - need.since > self._endpoint_wait:
                    self._lose(need, need.first, need.last, LossReason.NO_REPLAY_ENDPOINT)
                else:
                    self._keep(still, need)
                continue
            for first, last in self._store.missing(
                need.sender, need.topic, need.incarnation, need.first, need.last
            ):
                run = msgspec.structs.replace(need, first=first, last=last)
                if not self._ask(endpoint, run, now):
                    self._keep(still, run)
        self._waiting = still
        for key, need in list(self._asked.items()):
            if now - need.sent_at > self._answer_timeout:
                del self._asked[key]
                self._lose(need, need.first, need.last, LossReason.REPLAY_TIMEOUT)

    def _ask(self, endpoint: str, need: _Need, now: float) -> bool:
        """Send the request; False to try later (also while one for the same start is out)."""
        key = (need.sender, need.topic, need.incarnation, need.first)
        if key in self._asked:
            return False
        request = ReplayRequest(
            topic=need.topic, incarnation=need.incarnation, first=need.first, last=need.last
        )
        if not self._client.request(need.sender, endpoint, request):
            return False
        need.sent_at = now
        self._asked[key] = need
        self.requested += 1
        return True

    def settle(self, sender: str, done: ReplayDone) -> None:
        """A replay answer ended (and what it brought is committed): what the window no
        longer held is lost; telemetry that should have come and did not is asked again."""
        need = self._asked.pop((sender, done.topic, done.incarnation, done.first), None)
        if need is None:
            return
        kept_from = done.oldest_kept or done.last + 1
        if kept_from > done.first:
            self._lose(need, done.first, min(done.last, kept_from - 1), LossReason.BEYOND_WINDOW)
        if not need.topic.startswith(_FULLY_STORED) or kept_from > done.last:
            return
        for first, last in self._store.missing(
            sender, need.topic, need.incarnation, max(done.first, kept_from), done.last
        ):
            if need.attempts >= MAX_ATTEMPTS:
                self._lose(need, first, last, LossReason.REPLAY_INCOMPLETE)
            else:
                again = msgspec.structs.replace(
                    need, first=first, last=last, attempts=need.attempts + 1
                )
                self._keep(self._waiting, again)

    def _keep(self, waiting: list[_Need], need: _Need) -> None:
        """Queue `need` for a request, or record it lost when `max_pending` gaps already wait."""
        if len(waiting) + len(self._asked) >= self._max_pending:
            self.refused += 1
            self._lose(need, need.first, need.last, LossReason.REPAIR_BACKLOG)
        else:
            waiting.append(need)

    def _lose(self, need: _Need, first: int, last: int, reason: LossReason) -> None:
        channel = need.topic.split(".", 1)[0]
        self.lost += self._store.record_loss(
            need.sender,
            channel,
            first,
            last,
            reason,
            topic=need.topic,
            incarnation=need.incarnation,
        )
