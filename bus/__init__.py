"""Leyline's ZeroMQ transport: typed pub/sub that enforces the contracts at every subscriber.

The package root holds what a service wires together; the parts live in topical modules:
`bus.security` (CURVE keys and trust), `bus.metrics` (counters and the /metrics server),
`bus.sockets` (socket options), `bus.topics` (topic frames), `bus.sequence` (gap tracking),
`bus.header` and `bus.pipeline` (the wire and the enforcement steps), `bus.ready` (the one
connect/ready helper, also at the root), and `bus.testing` (an in-process bus and a
rejection capture, for tests).
"""

from bus.metrics import MetricsServer
from bus.pipeline import Envelope, SemanticGuard
from bus.proxy import Proxy
from bus.publisher import Publisher
from bus.ready import NotReadyError, missing, ready
from bus.rejection import Rejection
from bus.replay import ReplayClient
from bus.security import Curve, Role, SecurityError
from bus.sequence import Gap
from bus.sockets import SocketOptions
from bus.subscriber import Subscriber, Subscription
from bus.topics import CHANNEL_CONTRACTS, Channel, topic

__all__ = [
    "CHANNEL_CONTRACTS",
    "Channel",
    "Curve",
    "Envelope",
    "Gap",
    "MetricsServer",
    "NotReadyError",
    "Proxy",
    "Publisher",
    "Rejection",
    "ReplayClient",
    "Role",
    "SecurityError",
    "SemanticGuard",
    "SocketOptions",
    "Subscriber",
    "Subscription",
    "missing",
    "ready",
    "topic",
]
