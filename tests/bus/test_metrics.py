"""Counters readable from code, rendered as Prometheus text and served over HTTP."""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import structlog
from bus_loops import pump_until
from bus_samples import fast_signals, header, wire
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from bus import Channel, MetricsServer, Rejection
from bus.metrics import (
    METRIC_FAMILIES,
    Histogram,
    MetricSource,
    MetricType,
    PublisherMetrics,
    SubscriberMetrics,
    family_of,
    render_prometheus,
)
from bus.proxy import ProxyMetrics
from bus.rejection import RateLimitedLog
from bus.testing import InProcessBus
from leyline import RejectReason


def _families(text: str) -> list[Metric]:
    """The families of a Prometheus text exposition, read by the reference client's parser."""
    assert text.endswith("\n")
    return list(text_string_to_metric_families(text))


def _parse(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of a Prometheus text exposition, by name and labels."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in _families(text)
        for sample in family.samples
    }


def _busy_bus(bus: InProcessBus) -> tuple[list[MetricSource], dict[str, str]]:
    publisher = bus.publisher("w1")
    subscriber = bus.subscriber([(Channel.SIG, None)])
    bus.connect(publisher, subscriber)
    for epoch in range(5):
        publisher.publish(Channel.SIG, fast_signals(epoch), "w1")
    # The publisher's thread counts a batch once its send returns, which can be after the
    # subscriber has the batch: wait for both counts.
    assert pump_until(
        lambda: (
            subscriber.metrics.delivered[Channel.SIG] == publisher.metrics.sent[Channel.SIG] == 5
        ),
        subscriber,
    )
    subscriber.pipeline.process(wire(b"sig.w1.", header(), b"\xc1"))  # one malformed payload
    return [publisher.metrics.samples, subscriber.metrics.samples], {"service": "worker"}


def test_prometheus_text_parses_and_carries_the_counts(inproc: InProcessBus) -> None:
    sources, labels = _busy_bus(inproc)
    samples = _parse(render_prometheus(sources, labels))
    worker = ("service", "worker")
    assert samples[("leyline_sent_total", frozenset({worker, ("channel", "sig")}))] == 5
    assert samples[("leyline_delivered_total", frozenset({worker, ("channel", "sig")}))] == 5
    assert samples[("leyline_received_total", frozenset({worker, ("channel", "sig")}))] >= 6
    assert samples[("leyline_rejected_total", frozenset({worker, ("reason", "malformed")}))] == 1
    assert samples[("leyline_dropped_total", frozenset({worker, ("channel", "sig")}))] == 0
    assert samples[("leyline_decode_seconds_count", frozenset({worker}))] >= 5
    buckets = sorted(
        value for (name, _), value in samples.items() if name == "leyline_decode_seconds_bucket"
    )
    assert buckets[-1] == samples[("leyline_decode_seconds_count", frozenset({worker}))]


def test_every_family_has_help_and_type_and_its_samples_together(inproc: InProcessBus) -> None:
    sources, labels = _busy_bus(inproc)
    families = _families(render_prometheus(sources, labels))
    names = [family.name for family in families]
    assert len(names) == len(set(names))  # one block per family: the format requires it
    # The parser drops `_total` from a counter's family name; each family is one we describe.
    described = {name.removesuffix("_total"): kind for name, (kind, _) in METRIC_FAMILIES.items()}
    for family in families:
        assert family.documentation, f"{family.name} has no HELP"
        assert family.type == described[family.name].value, family.name
    decode = next(family for family in families if family.name == "leyline_decode_seconds")
    assert decode.type == "histogram"
    buckets = [s for s in decode.samples if s.name == "leyline_decode_seconds_bucket"]
    assert buckets[-1].labels["le"] == "+Inf"
    assert [s.value for s in buckets] == sorted(s.value for s in buckets)  # cumulative


def test_every_metric_the_bus_exposes_is_described_and_named_by_convention() -> None:
    """A new counter needs its one line in METRIC_FAMILIES; this names any that lacks it."""
    exposed = {
        family_of(name)
        for metrics in (SubscriberMetrics(), PublisherMetrics(), ProxyMetrics())
        for name, _, _ in metrics.samples()
    }
    assert sorted(exposed - METRIC_FAMILIES.keys()) == []
    for name, (kind, help_text) in METRIC_FAMILIES.items():
        assert name.startswith("leyline_") and help_text.endswith("."), name
        assert name.endswith("_total") == (kind is MetricType.COUNTER), name
        if kind is MetricType.HISTOGRAM:
            assert name.endswith(("_seconds", "_bytes")), f"{name}: name its base unit"


def test_large_counters_and_odd_label_values_survive_the_text_format() -> None:
    metrics = PublisherMetrics()
    metrics.sent[Channel.TEL] = 123_456_789  # `:g` would print 1.23457e+08
    node = 'w"1\\a\nb'
    samples = _parse(render_prometheus([metrics.samples], {"node": node}))
    labels = frozenset({("node", node), ("channel", "tel")})
    assert samples[("leyline_sent_total", labels)] == 123_456_789


def test_histogram_buckets_and_quantiles() -> None:
    histogram = Histogram((10, 100, 1000))
    for value in (5, 50, 50, 500, 5000):
        histogram.observe(value)
    assert histogram.counts == [1, 2, 1, 1]
    assert histogram.count == 5 and histogram.total == 5605
    assert histogram.quantile(0.5) == 100
    assert histogram.quantile(1.0) == 1000  # beyond the last bound: the last bound


def test_metrics_server_serves_metrics_over_http(inproc: InProcessBus) -> None:
    sources, labels = _busy_bus(inproc)
    server = MetricsServer(sources, labels, port=0)
    try:
        url = f"http://127.0.0.1:{server.port}"
        with urllib.request.urlopen(f"{url}/metrics", timeout=5) as response:
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/plain")
            samples = _parse(response.read().decode())
        assert (
            samples[("leyline_sent_total", frozenset({("service", "worker"), ("channel", "sig")}))]
            == 5
        )
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(f"{url}/other", timeout=5)
        assert missing.value.code == 404
    finally:
        server.close()


def test_rejections_are_logged_at_a_bounded_rate_per_reason() -> None:
    def rejection(reason: RejectReason) -> Rejection:
        return Rejection(reason=reason, sender="evil", topic="sig.w1.", detail="bad")

    with structlog.testing.capture_logs() as logs:
        log = RateLimitedLog(per_second=1.0, logger=structlog.get_logger("test"))
        for _ in range(100):
            log.log(rejection(RejectReason.MALFORMED))
        log.log(rejection(RejectReason.OVERSIZE))
    malformed = [e for e in logs if e["reason"] == "MALFORMED"]
    # A burst gets the bucket (one token) and nothing more unless a second passes mid-burst.
    assert 1 <= len(malformed) <= 2
    assert log.suppressed == 100 - len(malformed)
    assert [e["reason"] for e in logs if e["reason"] != "MALFORMED"] == ["OVERSIZE"]
    assert malformed[0]["sender"] == "evil" and malformed[0]["log_level"] == "warning"


def test_the_sample_grafana_dashboard_queries_only_metrics_we_expose() -> None:
    path = Path(__file__).parents[2] / "docs" / "grafana-dashboard.json"
    dashboard = json.loads(path.read_text(encoding="utf-8"))
    queried = {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"\bleyline_[a-z_]+", target["expr"])
    }
    assert queried and {family_of(name) for name in queried} <= METRIC_FAMILIES.keys()
