"""Counters and a latency histogram, readable from code and as Prometheus text."""

from __future__ import annotations

import bisect
import enum
import math
import threading
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from bus.topics import Channel
from leyline import RejectReason

__all__ = [
    "LATENCY_BUCKETS_NS",
    "METRIC_FAMILIES",
    "Histogram",
    "MetricSource",
    "MetricType",
    "MetricsServer",
    "PublisherMetrics",
    "SubscriberMetrics",
    "family_of",
    "render_prometheus",
]

#: Upper bounds of the decode-latency buckets, in nanoseconds (1 us to 10 ms).
LATENCY_BUCKETS_NS = (1_000, 2_000, 5_000, 10_000, 20_000, 50_000, 100_000, 1_000_000, 10_000_000)


class Histogram:
    """A cumulative-bucket histogram in the Prometheus sense."""

    def __init__(self, bounds: tuple[int, ...] = LATENCY_BUCKETS_NS) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0
        self.count = 0

    def observe(self, value: int, times: int = 1) -> None:
        """`times` observations of `value` (a batch's messages, each its share of the time)."""
        self.counts[bisect.bisect_left(self.bounds, value)] += times
        self.total += value * times
        self.count += times

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
        #: Announced earlier incarnations forgotten at the cap (they are reported again).
        self.announcements_forgotten = 0
        #: Valid messages no handler took and nobody received before the inbox filled.
        self.unclaimed_dropped = 0
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
        yield "leyline_announcements_forgotten_total", {}, self.announcements_forgotten
        yield "leyline_unclaimed_dropped_total", {}, self.unclaimed_dropped
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


class MetricType(enum.StrEnum):
    """The Prometheus type of a metric family."""

    COUNTER = "counter"
    GAUGE = "gauge"
    HISTOGRAM = "histogram"


_C, _G, _H = MetricType.COUNTER, MetricType.GAUGE, MetricType.HISTOGRAM

#: Every family the bus exposes: its type and HELP text. A new metric is one line here.
METRIC_FAMILIES: dict[str, tuple[MetricType, str]] = {
    "leyline_received_total": (_C, "Messages with a valid topic and header, per channel."),
    "leyline_delivered_total": (_C, "Messages that passed enforcement and reached a handler."),
    "leyline_rejected_total": (_C, "Messages refused by enforcement, per rejection reason."),
    "leyline_gaps_total": (_C, "Sequence gaps found inside incoming streams."),
    "leyline_missing_messages_total": (_C, "Messages missing inside detected gaps."),
    "leyline_sender_restarts_total": (_C, "Senders seen starting a new incarnation."),
    "leyline_heartbeats_total": (_C, "Heartbeats received."),
    "leyline_stale_peers": (_G, "Peers silent for longer than their liveness timeout."),
    "leyline_announcements_forgotten_total": (
        _C,
        "Announced earlier incarnations forgotten at the ledger's cap (reported again if seen).",
    ),
    "leyline_unclaimed_dropped_total": (
        _C,
        "Valid messages no handler took, dropped from a full inbox before anyone received them.",
    ),
    "leyline_decode_seconds": (_H, "Time to decode and validate one payload."),
    "leyline_sent_total": (_C, "Messages published, per channel."),
    "leyline_dropped_total": (_C, "Messages dropped by a full send queue, per channel."),
    "leyline_control_dropped_total": (_C, "Control messages dropped by a full send queue."),
    "leyline_upstream_refused_total": (
        _C,
        "Upstream input a publisher refused (bad or excess subscriptions, junk), per reason.",
    ),
    "leyline_auth_accepted_total": (_C, "CURVE client keys ZAP accepted from the trust directory."),
    "leyline_auth_denied_total": (_C, "CURVE client keys ZAP refused: not in the trust directory."),
    "leyline_proxy_messages_total": (_C, "Messages the proxy forwarded downstream."),
    "leyline_proxy_bytes_total": (_C, "Bytes the proxy forwarded downstream."),
    "leyline_proxy_subscriptions_total": (_C, "Subscriptions the proxy forwarded upstream."),
    "leyline_proxy_dropped_total": (_C, "Messages the proxy dropped at a full subscriber."),
    "leyline_proxy_refused_total": (
        _C,
        "Messages the proxy refused: forged sender, not permitted, or unreadable.",
    ),
}
_HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def family_of(sample: str) -> str:
    """The family a sample name belongs to: itself, or a histogram's name for its series."""
    for suffix in _HISTOGRAM_SUFFIXES:
        base = sample.removesuffix(suffix)
        if base != sample and base in METRIC_FAMILIES and METRIC_FAMILIES[base][0] is _H:
            return base
    return sample


def render_prometheus(sources: Iterable[MetricSource], labels: dict[str, str]) -> str:
    """Prometheus text exposition (format 0.0.4) of every sample of `sources`, with `labels` added.

    Each family's samples come together under its HELP and TYPE lines; a family missing from
    `METRIC_FAMILIES` is still served, as `untyped`, rather than break the scrape.
    """
    families: dict[str, list[str]] = {}
    for source in sources:
        for name, own, value in source():
            merged = {**labels, **own}
            rendered = ",".join(f'{k}="{_escape_label(v)}"' for k, v in merged.items())
            families.setdefault(family_of(name), []).append(
                f"{name}{{{rendered}}} {_number(value)}"
            )
    lines = []
    for family, samples in families.items():
        kind, help_text = METRIC_FAMILIES.get(family) or ("untyped", "")
        if help_text:
            lines.append(f"# HELP {family} {_escape_help(help_text)}")
        lines.append(f"# TYPE {family} {kind}")
        lines.extend(samples)
    return "\n".join(lines) + "\n"


def _number(value: float) -> str:
    """Exact: an integer in full (`:g` would round a large counter), a float as repr."""
    if isinstance(value, int):
        return str(value)
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return "NaN" if math.isnan(value) else repr(float(value))


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


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
