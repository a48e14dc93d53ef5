"""asyncio receive loop: one await per readiness, then a synchronous drain of a batch."""

from __future__ import annotations

import asyncio

import zmq
import zmq.asyncio

from bus.subscriber import Subscriber


async def serve(subscriber: Subscriber, stop: asyncio.Event, timeout_ms: int = 100) -> None:
    """Deliver `subscriber`'s messages until `stop` is set, without blocking the event loop.

    The awaitable shadows the subscriber's socket (same libzmq socket, no copy), so the batch
    is drained with plain non-blocking receives instead of one await per message.
    """
    waiter = zmq.asyncio.Socket.shadow(subscriber.socket.underlying)
    while not stop.is_set():
        if await waiter.poll(timeout_ms):  # POLLIN is the default
            subscriber.drain()
        subscriber.check_liveness()
        await asyncio.sleep(0)
