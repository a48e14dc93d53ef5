"""Counters and a latency histogram, readable from code and as Prometheus text."""

from __future__ import annotations

import bisect
import threading
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from bus.topics import Channel
from leyline import RejectReason

#: Upper bounds of the decode-latency buckets, in nanoseconds (1 us to 10 ms).
LATENCY_BUCKETS_NS = (1_000, 2_000, 5_000, 10_000, 20_000, 50_000, 100_000, 1_000_000, 10_000_000)


class Histogram:
    """A cumulative-bucket histogram in the Prometheus sense."""

    def __init__(self, bounds: tuple[int, ...] = LATENCY_BUCKETS_NS) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0
        self.count = 0

    def observe(self, value: int) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value
        self.count += 1

    def quantile(self, q: float) -> int:
        """The upper bound of the bucket holding quantile `q` (the last bound if beyond)."""
        target, seen = q * self.count, 0
        for bound, count in zip(self.bounds, self.counts, strict=False):
            seen += count
            if seen >= target:
                return bound
        return self.bounds[-1]


def _per_channel() -> dict[Channel, int]:
    return dict.fromkeys(Channel, 0)


class SubscriberMetrics:
    """What one subscriber received, delivered, refused, and found missing."""

    def __init__(self) -> None:
        self.received = _per_channel()
        self.delivered = _per_channel()
        self.rejected: dict[RejectReason, int] = dict.fromkeys(RejectReason, 0)
        self.gaps = 0
        self.missing = 0
        self.restarts = 0
        self.heartbeats = 0
        self.stale_peers = 0
        self.decode_latency = Histogram()

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())

    def samples(self) -> Iterable[tuple[str, dict[str, str], float]]:
        for channel in Channel:
            labels = {"channel": channel.value}
            yield "leyline_received_total", labels, self.received[channel]
            yield "leyline_delivered_total", labels, self.delivered[channel]
        for reason, count in self.rejected.items():
            yield "leyline_rejected_total", {"reason": reason.name.lower()}, count
        yield "leyline_gaps_total", {}, self.gaps
        yield "leyline_missing_messages_total", {}, self.missing
        yield "leyline_sender_restarts_total", {}, self.restarts
        yield "leyline_heartbeats_total", {}, self.heartbeats
        yield "leyline_stale_peers", {}, self.stale_peers
        cumulative = 0
        for bound, count in zip(
            self.decode_latency.bounds, self.decode_latency.counts, strict=False
        ):
            cumulative += count
            yield "leyline_decode_seconds_bucket", {"le": f"{bound / 1e9:g}"}, cumulative
        yield "leyline_decode_seconds_bucket", {"le": "+Inf"}, self.decode_latency.count
        yield "leyline_decode_seconds_sum", {}, self.decode_latency.total / 1e9
        yield "leyline_decode_seconds_count", {}, self.decode_latency.count


class PublisherMetrics:
    """What one publisher sent, what a full queue made it drop (never silently), and which
    upstream input it refused: subscriptions, junk, connections libzmq gave up on."""

    def __init__(self) -> None:
        self.sent = _per_channel()
        self.dropped = _per_channel()
        self.control_dropped = 0
        self.refused: dict[RejectReason, int] = dict.fromkeys(RejectReason, 0)

    def samples(self) -> Iterable[tuple[str, dict[str, str], float]]:
        for channel in Channel:
            labels = {"channel": channel.value}
            yield "leyline_sent_total", labels, self.sent[channel]
            yield "leyline_dropped_total", labels, self.dropped[channel]
        yield "leyline_control_dropped_total", {}, self.control_dropped
        for reason, count in self.refused.items():
            yield "leyline_upstream_refused_total", {"reason": reason.name.lower()}, count


MetricSource = Callable[[], Iterable[tuple[str, dict[str, str], float]]]


def render_prometheus(sources: Iterable[MetricSource], labels: dict[str, str]) -> str:
    """Prometheus text exposition of every sample of `sources`, with `labels` added."""
    lines = []
    for source in sources:
        for name, own, value in source():
            merged = {**labels, **own}
            rendered = ",".join(f'{k}="{v}"' for k, v in merged.items())
            lines.append(f"{name}{{{rendered}}} {value:g}")
    return "\n".join(lines) + "\n"


class MetricsServer:
    """Serves `/metrics` for this process on `port` (0 picks a free one) from a daemon thread."""

    def __init__(
        self,
        sources: list[MetricSource],
        labels: dict[str, str],
        port: int,
        host: str = "127.0.0.1",
    ) -> None:
        def render() -> str:
            return render_prometheus(sources, labels)

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path != "/metrics":
                    self.send_error(404)
                    return
                body = render().encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                return

        self._server = ThreadingHTTPServer((host, port), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
