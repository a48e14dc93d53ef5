"""An XSUB/XPUB proxy for many-to-many topologies, counting what it forwards."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import zmq

from bus.sockets import DEFAULT_SOCKET_OPTIONS, SocketOptions, attach, make_socket


class ProxyMetrics:
    """Messages and bytes forwarded downstream, subscriptions forwarded upstream."""

    def __init__(self) -> None:
        self.messages = 0
        self.bytes = 0
        self.subscriptions = 0
        self.dropped = 0

    def samples(self) -> Iterable[tuple[str, dict[str, str], float]]:
        yield "leyline_proxy_messages_total", {}, self.messages
        yield "leyline_proxy_bytes_total", {}, self.bytes
        yield "leyline_proxy_subscriptions_total", {}, self.subscriptions
        yield "leyline_proxy_dropped_total", {}, self.dropped


class Proxy:
    """Publishers connect to `frontend` (XSUB), subscribers to `backend` (XPUB).

    The backend is verbose, so every subscriber's subscription reaches the publishers and each
    gets its own `Ready`; a full downstream queue drops, counted, instead of blocking everyone.
    """

    def __init__(
        self,
        frontend: str,
        backend: str,
        *,
        context: zmq.Context[zmq.Socket[bytes]] | None = None,
        options: SocketOptions = DEFAULT_SOCKET_OPTIONS,
    ) -> None:
        self._context = context or zmq.Context.instance()
        self._front = make_socket(self._context, "xsub", options)
        self._back = make_socket(self._context, "xpub", options)
        self.frontend = attach(self._front, frontend, bind=True)
        self.backend = attach(self._back, backend, bind=True)
        self.metrics = ProxyMetrics()
        self._poller = zmq.Poller()
        self._poller.register(self._front, zmq.POLLIN)
        self._poller.register(self._back, zmq.POLLIN)

    def step(self, timeout_ms: int = 100) -> None:
        """Forward whatever is ready in either direction."""
        events = dict(self._poller.poll(timeout_ms))
        if self._back in events:
            while True:
                try:
                    subscription = self._back.recv(zmq.NOBLOCK)
                except zmq.Again:
                    break
                self._front.send(subscription)
                self.metrics.subscriptions += 1
        if self._front in events:
            while True:
                try:
                    frames = self._front.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                try:
                    self._back.send_multipart(frames, zmq.NOBLOCK)
                except zmq.Again:
                    self.metrics.dropped += 1
                    continue
                self.metrics.messages += 1
                self.metrics.bytes += sum(len(frame) for frame in frames)

    def run(self, should_stop: Callable[[], bool]) -> None:
        while not should_stop():
            self.step()

    def close(self) -> None:
        self._front.close()
        self._back.close()
