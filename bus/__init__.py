"""Leyline's ZeroMQ transport: typed pub/sub that enforces the contracts at every subscriber."""

from bus.guards import CommandGuard, TransitionGuard
from bus.header import WIRE_VERSION, Header
from bus.metrics import MetricsServer, PublisherMetrics, SubscriberMetrics, render_prometheus
from bus.pipeline import Envelope, Pipeline, SemanticGuard
from bus.proxy import Proxy, ProxyMetrics
from bus.publisher import Publisher
from bus.rejection import Rejection
from bus.sequence import Gap, Order, SequenceTracker
from bus.sockets import DEFAULT_SOCKET_OPTIONS, SocketOptions, make_socket
from bus.subscriber import Subscriber, Subscription
from bus.topics import CHANNEL_CONTRACTS, Channel, control_topic, parse_topic, topic

__all__ = [
    "CHANNEL_CONTRACTS",
    "DEFAULT_SOCKET_OPTIONS",
    "WIRE_VERSION",
    "Channel",
    "CommandGuard",
    "Envelope",
    "Gap",
    "Header",
    "MetricsServer",
    "Order",
    "Pipeline",
    "Proxy",
    "ProxyMetrics",
    "Publisher",
    "PublisherMetrics",
    "Rejection",
    "SemanticGuard",
    "SequenceTracker",
    "SocketOptions",
    "Subscriber",
    "SubscriberMetrics",
    "Subscription",
    "TransitionGuard",
    "control_topic",
    "make_socket",
    "parse_topic",
    "render_prometheus",
    "topic",
]
