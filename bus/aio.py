"""asyncio receive loop: one await per readiness, then a synchronous drain of a batch."""

from __future__ import annotations

import asyncio

import zmq
import zmq.asyncio

from bus.subscriber import Subscriber


async def serve(subscriber: Subscriber, stop: asyncio.Event, timeout_ms: int = 100) -> None:
    """Deliver `subscriber`'s messages until `stop` is set, without blocking the event loop.

    The awaitable sockets shadow the subscriber's (same libzmq sockets, no copy), so the batch
    is drained with plain non-blocking receives instead of one await per message.
    """
    poller = zmq.asyncio.Poller()
    for sock in subscriber.sockets:
        poller.register(zmq.asyncio.Socket.shadow(sock.underlying), zmq.POLLIN)
    while not stop.is_set():
        if await poller.poll(timeout_ms):
            subscriber.drain()
        subscriber.check_liveness()
        await asyncio.sleep(0)
