"""The asyncio receive loop delivers without blocking the event loop and stops on request."""

from __future__ import annotations

import asyncio

from bus_samples import fast_signals

from bus import Channel, Envelope
from bus.aio import serve
from bus.testing import InProcessBus

COUNT = 600  # more than one drain batch


def test_serve_delivers_and_stops_when_the_event_is_set(inproc: InProcessBus) -> None:
    publisher = inproc.publisher("w1")
    subscriber = inproc.subscriber([(Channel.SIG, None)], batch=64)
    inproc.connect(publisher, subscriber)
    received: list[Envelope] = []

    async def scenario() -> None:
        all_arrived = asyncio.Event()

        def handler(envelope: Envelope) -> None:
            received.append(envelope)
            if len(received) == COUNT:
                all_arrived.set()

        subscriber.on(Channel.SIG, handler)
        stop = asyncio.Event()
        task = asyncio.create_task(serve(subscriber, stop, timeout_s=0.02))
        for epoch in range(COUNT):
            publisher.publish(Channel.SIG, fast_signals(epoch % 30), "w1")
            if epoch % 100 == 0:
                await asyncio.sleep(0)  # let the loop run while publishing
        await asyncio.wait_for(all_arrived.wait(), timeout=10)
        stop.set()
        await asyncio.wait_for(task, timeout=5)

    asyncio.run(scenario())
    assert [e.header.sequence for e in received] == list(range(1, COUNT + 1))
    assert subscriber.metrics.delivered[Channel.SIG] == COUNT
