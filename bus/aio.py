"""asyncio receive: one await per readiness, then a synchronous drain of a batch."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import zmq
import zmq.asyncio

from bus.pipeline import Envelope
from bus.subscriber import Subscriber


def _poller(subscriber: Subscriber) -> zmq.asyncio.Poller:
    """Awaitable sockets that shadow the subscriber's (same libzmq sockets, no copy), so a
    batch is drained with plain non-blocking receives instead of one await per message."""
    poller = zmq.asyncio.Poller()
    for sock in subscriber.sockets:
        poller.register(zmq.asyncio.Socket.shadow(sock.underlying), zmq.POLLIN)
    return poller


async def _readable(poller: zmq.asyncio.Poller, timeout_s: float) -> bool:
    """Whether input came within `timeout_s`. pyzmq's asyncio poll honours a socket's
    ZMQ_RCVTIMEO, which `Subscriber.poll` sets to wait in its receive: a poll it ends early
    is one that timed out."""
    try:
        return bool(await poller.poll(int(timeout_s * 1000)))
    except zmq.Again:
        return False


async def serve(subscriber: Subscriber, stop: asyncio.Event, timeout_s: float = 0.1) -> None:
    """Deliver `subscriber`'s messages to its handlers until `stop` is set, without
    blocking the event loop."""
    poller = _poller(subscriber)
    while not stop.is_set():
        if await _readable(poller, timeout_s):
            subscriber.drain()
        subscriber.check_liveness()
        await asyncio.sleep(0)


async def messages(subscriber: Subscriber, timeout_s: float = 0.1) -> AsyncIterator[Envelope[Any]]:
    """Every valid message no handler took, as it comes: `async for envelope in messages(sub)`.

    Ends when the subscriber is closed; handlers registered with `on` still run as usual.
    """
    poller = _poller(subscriber)
    while True:
        envelope = subscriber.receive(0.0)
        if envelope is not None:
            yield envelope
            continue
        if subscriber.closed:
            return
        if await _readable(poller, timeout_s):
            subscriber.drain()
        subscriber.check_liveness()
