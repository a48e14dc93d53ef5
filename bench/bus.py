"""Bus: typed publish-to-subscribe throughput and a signal-to-command round trip, two processes.

Ours is the whole bus: `Publisher.publish` (topic, header, per-topic sequence, budgeted encode,
coalescing of back-to-back messages to one topic into one frame) and `Subscriber.poll`
(frame, size, topic, header, identity, tag and version, typed decode with value constraints,
sequence, freshness, guard, handler). The ceilings are what a user would hand-roll, over the
same tcp loopback transport, each message ONE frame (topic prefix + payload):

- codec: pyzmq with msgspec: the publisher encodes each message and sends topic + payload as
  one frame, the subscriber slices off the topic and decodes the payload with msgspec's typed
  decoder (the array-like Struct): no header, no sequence, no identity, no guard, no handler
  dispatch, one message per frame. The goals are ratios to it;
- codec_curve: the same with CURVE on (keys, handshake, encryption: what CURVE costs anyone);
- transport: pyzmq moving pre-encoded one-message frames, nothing encoded or decoded.

`curve` is ours with CURVE on (every link authenticated and encrypted, each frame's sender
checked against its connection's identity); its ratios are to `codec_curve`.

The publisher (throughput) or the command side (round trip) is a child process started with
`spawn`; this process subscribes and times. High-water marks are off (0) for every candidate
so that throughput counts messages moved, not messages dropped; every message is counted at
the subscriber. Runs of all candidates interleave, so a neighbour's load hits them alike; the
best run is the figure.
"""

from __future__ import annotations

import multiprocessing
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

import msgspec
import zmq

from bench._harness import progress
from bench._samples import fast_signals
from bus import Channel, Envelope, Publisher, SocketOptions, Subscriber
from bus.security import Curve, Role, ensure_keys
from leyline import AdaptationCommand, CommandType, LifecycleGuard, SeedStage, new_id
from leyline.wire import encode
from services.guards import CommandGuard

MODES = ("ours", "curve", "codec", "codec_curve", "transport")
#: The bus's own candidates: plaintext, and CURVE on.
OURS = ("ours", "curve")
CURVED = ("curve", "codec_curve")
#: Each of ours against the ceiling of the same security.
CEILING_OF = {"ours": "codec", "curve": "codec_curve"}
THROUGHPUT_MESSAGES = 50_000
THROUGHPUT_RUNS = 3
ROUND_TRIPS = 5_000
#: The trips in this many runs of each candidate, interleaved and pooled: the p99 is the
#: slowest 50 trips, and in two runs a burst of the VM's scheduling could land on one
#: candidate's (its ratio to the transport spread 1.1-2.9 from run to run; 1.8-2.1 in ten).
ROUND_TRIP_RUNS = 10
UNBOUNDED = SocketOptions(send_hwm=0, receive_hwm=0)
ANY_PORT = "tcp://127.0.0.1:*"
SLOT = "block2_post"
SIG, CMD = b"sig.w1.", b"cmd.w1."
#: The key directory of this run (set in `run` and in the child).
_KEYS = ""


def _command() -> AdaptationCommand:
    return AdaptationCommand(
        command_id=new_id(),
        command_type=CommandType.ADVANCE_STAGE,
        target_slot_id=SLOT,
        target_stage=SeedStage.BLENDING,
    )


def _raw(
    context: zmq.Context[zmq.Socket[bytes]], kind: int, mode: str, identity: str, server: str = ""
) -> zmq.Socket[bytes]:
    """A ceiling's socket: a server (binds, `server` empty) or a client pinning `server`."""
    sock = context.socket(kind)
    sock.setsockopt(zmq.SNDHWM, 0)
    sock.setsockopt(zmq.RCVHWM, 0)
    sock.setsockopt(zmq.LINGER, 0)
    security = _security(_KEYS, mode, identity)
    if security is not None:
        if server:
            security.pin(sock, server)
        else:
            security.serve(sock)
    return sock


def _decoder(cls: type[msgspec.Struct]) -> Callable[[bytes, int], Any]:
    """The codec ceiling's receive: one typed msgspec decode of the payload after the topic."""
    decode = msgspec.msgpack.Decoder(cls).decode

    def decode_after(frame: bytes, topic_length: int) -> Any:
        return decode(memoryview(frame)[topic_length:])

    return decode_after


def _wait_subscribed(xpub: zmq.Socket[bytes]) -> None:
    """A raw XPUB knows a subscriber is listening once its subscription arrives."""
    if not xpub.poll(10_000):
        raise TimeoutError("no subscriber")
    xpub.recv()


def _mutual_ready(
    conn: Connection, publisher: Publisher, subscriber: Subscriber, peer: str
) -> None:
    """Service our publisher until we heard `peer`'s Ready and the other side says so too.

    Each side tells the other once its own subscriber is ready, and keeps answering the other's
    subscriptions until it hears the same back; the caller then reads that message.
    """
    told = False
    while not (told and conn.poll()):
        publisher.service()
        if not told and subscriber.wait_ready(0.002, publishers=[peer]):
            conn.send("ready")
            told = True


# --- the child process ------------------------------------------------------------------------


def _security(keys: str, mode: str, identity: str) -> Curve | None:
    return Curve.from_directory(keys, identity) if mode in CURVED else None


def _peer(mode: str, identity: str, address: str) -> str:
    """A connect address: with CURVE it names the server whose key to pin."""
    return f"{identity}@{address}" if mode in CURVED else address


def _child(conn: Connection, keys: str) -> None:
    """Serve the parent's requests: publish a stream, or answer signals with commands."""
    global _KEYS
    _KEYS = keys
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    while True:
        request = conn.recv()
        if request is None:
            break
        task, mode, count = request
        (_publish_stream if task == "stream" else _answer)(conn, context, mode, count)
    Curve.stop_handlers(context)
    context.term()


def _publish_stream(conn: Connection, context: Any, mode: str, count: int) -> None:
    signal = fast_signals()
    if mode in OURS:
        publisher = Publisher(
            ANY_PORT,
            "w1",
            context=context,
            options=UNBOUNDED,
            security=_security(_KEYS, mode, "w1"),
        )
        conn.send(publisher.address)
        while not conn.poll(0.002):  # answer subscriptions until the parent has its Ready
            publisher.service()
        conn.recv()
        publish = publisher.publish
        for _ in range(count):
            publish(Channel.SIG, signal, "w1")
        publisher.flush()  # the burst's last batch (its own thread would send it within ms)
        conn.send(sum(publisher.metrics.dropped.values()))
        conn.recv()  # everything arrived: closing cannot discard a queued message
        publisher.close()
        return
    sock = _raw(context, zmq.XPUB, mode, "w1")
    sock.bind(ANY_PORT)
    conn.send(sock.getsockopt_string(zmq.LAST_ENDPOINT))
    _wait_subscribed(sock)
    conn.send("ready")
    conn.recv()
    send = sock.send
    if mode == "transport":
        frame = SIG + encode(signal)
        for _ in range(count):
            send(frame)
    else:
        bare = msgspec.msgpack.Encoder().encode
        for _ in range(count):
            send(SIG + bare(signal))
    conn.send(0)
    conn.recv()
    sock.close()


def _answer(conn: Connection, context: Any, mode: str, count: int) -> None:
    """The command side of the round trip: every signal received is answered by a command."""
    command = _command()
    if mode in OURS:
        publisher = Publisher(
            ANY_PORT,
            "controller",
            context=context,
            options=UNBOUNDED,
            security=_security(_KEYS, mode, "controller"),
        )
        conn.send(publisher.address)
        subscriber = Subscriber(
            _peer(mode, "w1", conn.recv()),
            [(Channel.SIG, None)],
            context=context,
            options=UNBOUNDED,
            security=_security(_KEYS, mode, "controller"),
        )

        def on_signal(_: Envelope[Any]) -> None:
            publisher.publish(Channel.CMD, command, "w1")

        subscriber.on(Channel.SIG, on_signal)
        _mutual_ready(conn, publisher, subscriber, "w1")
        conn.recv()  # their ready: both directions are proven
        answered = 0
        while answered < count:
            answered += subscriber.poll(0.1)
        conn.recv()
        subscriber.close()
        publisher.close()
        return
    pub = _raw(context, zmq.XPUB, mode, "controller")
    pub.bind(ANY_PORT)
    conn.send(pub.getsockopt_string(zmq.LAST_ENDPOINT))
    sub = _raw(context, zmq.SUB, mode, "controller", server="w1")
    sub.setsockopt(zmq.SUBSCRIBE, SIG)
    sub.connect(conn.recv())
    _wait_subscribed(pub)
    conn.send("ready")
    conn.recv()
    recv, send = sub.recv, pub.send
    reply = CMD + encode(command)
    if mode == "transport":
        for _ in range(count):
            recv()
            send(reply)
    else:
        decode = _decoder(type(fast_signals()))
        bare = msgspec.msgpack.Encoder().encode
        for _ in range(count):
            decode(recv(), len(SIG))
            send(CMD + bare(command))
    conn.recv()
    sub.close()
    pub.close()


# --- this process -----------------------------------------------------------------------------


def _stream(conn: Connection, context: Any, mode: str, count: int, keys: str) -> float:
    """Receive `count` signals from the child; returns messages per second."""
    conn.send(("stream", mode, count))
    address = conn.recv()
    received = 0
    if mode in OURS:
        subscriber = Subscriber(
            _peer(mode, "w1", address),
            [(Channel.SIG, "w1")],
            context=context,
            options=UNBOUNDED,
            security=_security(keys, mode, "controller"),
        )

        def on_signal(_: Envelope[Any]) -> None:
            nonlocal received
            received += 1

        subscriber.on(Channel.SIG, on_signal)
        if not subscriber.wait_ready(10.0, publishers=["w1"]):
            raise TimeoutError("publisher never answered")
        started = time.perf_counter()
        conn.send("go")
        while received < count:
            subscriber.poll(0.1)
        elapsed = time.perf_counter() - started
        subscriber.close()
    else:
        sub = _raw(context, zmq.SUB, mode, "controller", server="w1")
        sub.setsockopt(zmq.SUBSCRIBE, SIG)
        sub.connect(address)
        conn.recv()  # ready
        decode = _decoder(type(fast_signals()))
        started = time.perf_counter()
        conn.send("go")
        recv = sub.recv
        skip = len(SIG)
        while received < count:
            if not sub.poll(100):
                continue
            while received < count:  # drain what is queued, as the bus does
                try:
                    frame = recv(zmq.NOBLOCK)
                except zmq.Again:
                    break
                if mode != "transport":
                    decode(frame, skip)
                received += 1
        elapsed = time.perf_counter() - started
        sub.close()
    if conn.recv() != 0:
        raise AssertionError("the publisher dropped messages with no high-water mark")
    conn.send("done")
    return count / elapsed


def _round_trips(conn: Connection, context: Any, mode: str, count: int, keys: str) -> list[int]:
    """`count` signal-to-command round trips through the child; returns each in ns."""
    conn.send(("answer", mode, count))
    their_address = conn.recv()
    samples: list[int] = []
    clock = time.perf_counter_ns
    signal = fast_signals()
    if mode in OURS:
        lifecycle = LifecycleGuard()
        lifecycle.record("w1", SLOT, SeedStage.TRAINING)
        guard = CommandGuard(lifecycle, "w1", lambda c: c.target_slot_id)
        security = _security(keys, mode, "w1")
        publisher = Publisher(ANY_PORT, "w1", context=context, options=UNBOUNDED, security=security)
        subscriber = Subscriber(
            _peer(mode, "controller", their_address),
            [(Channel.CMD, "w1")],
            context=context,
            options=UNBOUNDED,
            guards={Channel.CMD: guard},
            security=security,
        )
        conn.send(publisher.address)
        answers = 0

        def on_command(_: Envelope[Any]) -> None:
            nonlocal answers
            answers += 1

        subscriber.on(Channel.CMD, on_command)
        _mutual_ready(conn, publisher, subscriber, "controller")
        conn.recv()  # their ready: both directions are proven
        for n in range(1, count + 1):
            started = clock()
            publisher.publish(Channel.SIG, signal, "w1")
            while answers < n:
                subscriber.poll(0.1)
            samples.append(clock() - started)
        conn.send("done")
        subscriber.close()
        publisher.close()
        return samples
    pub = _raw(context, zmq.XPUB, mode, "w1")
    pub.bind(ANY_PORT)
    sub = _raw(context, zmq.SUB, mode, "w1", server="controller")
    sub.setsockopt(zmq.SUBSCRIBE, CMD)
    sub.connect(their_address)
    conn.send(pub.getsockopt_string(zmq.LAST_ENDPOINT))
    _wait_subscribed(pub)  # they listen to us
    conn.recv()  # and we to them
    conn.send("go")
    recv, send = sub.recv, pub.send
    frame = SIG + encode(signal)
    if mode == "transport":
        for _ in range(count):
            started = clock()
            send(frame)
            recv()
            samples.append(clock() - started)
    else:
        decode = _decoder(AdaptationCommand)
        bare = msgspec.msgpack.Encoder().encode
        for _ in range(count):
            started = clock()
            send(SIG + bare(signal))
            decode(recv(), len(CMD))
            samples.append(clock() - started)
    conn.send("done")
    sub.close()
    pub.close()
    return samples


def _percentile(ordered: list[int], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1e3


def run() -> dict[str, Any]:
    global _KEYS
    keys = _KEYS = tempfile.mkdtemp(prefix="leyline-bench-keys-")
    ensure_keys(keys, {"w1": Role.WORKER, "controller": Role.CONTROLLER})
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    parent, child_end = multiprocessing.get_context("spawn").Pipe()
    child = multiprocessing.get_context("spawn").Process(target=_child, args=(child_end, keys))
    child.start()
    try:
        rates: dict[str, list[float]] = {mode: [] for mode in MODES}
        for _ in range(THROUGHPUT_RUNS):
            for mode in MODES:
                rates[mode].append(_stream(parent, context, mode, THROUGHPUT_MESSAGES, keys))
                progress(f"throughput {mode:9s} {rates[mode][-1]:10,.0f} msg/s")
        trips: dict[str, list[int]] = {mode: [] for mode in MODES}
        for _ in range(ROUND_TRIP_RUNS):
            for mode in MODES:
                run_samples = _round_trips(
                    parent, context, mode, ROUND_TRIPS // ROUND_TRIP_RUNS, keys
                )
                trips[mode].extend(run_samples)
                progress(
                    f"round trip {mode:9s} median {statistics.median(run_samples) / 1e3:7.1f} us"
                )
        parent.send(None)
    finally:
        child.join(timeout=10)
        if child.is_alive():
            child.kill()
        Curve.stop_handlers(context)
        context.term()
        shutil.rmtree(keys, ignore_errors=True)
    throughput = {mode: round(max(rates[mode])) for mode in MODES}
    latency = {}
    for mode in MODES:
        ordered = sorted(trips[mode])
        latency[mode] = {
            name: round(_percentile(ordered, q), 1)
            for name, q in (("p50_us", 0.5), ("p99_us", 0.99), ("p999_us", 0.999))
        }
    figures: dict[str, Any] = {
        "throughput_msg_s": throughput,
        "round_trip": latency,
        "round_trips": ROUND_TRIPS,
        "messages_per_run": THROUGHPUT_MESSAGES,
    }
    for ours, ceiling in CEILING_OF.items():
        figures[f"{ours}_throughput_ratio_to_{ceiling}"] = round(
            throughput[ours] / throughput[ceiling], 3
        )
        figures[f"{ours}_round_trip_p99_ratio_to_transport"] = round(
            latency[ours]["p99_us"] / latency["transport"]["p99_us"], 3
        )
        figures[f"{ours}_round_trip_p99_ratio_to_{ceiling}"] = round(
            latency[ours]["p99_us"] / latency[ceiling]["p99_us"], 3
        )
    progress(
        f"throughput ours/codec {figures['ours_throughput_ratio_to_codec']}, "
        f"curve/codec_curve {figures['curve_throughput_ratio_to_codec_curve']} (goal >= 0.85); "
        f"round-trip p99 ours/transport {figures['ours_round_trip_p99_ratio_to_transport']} "
        "(goal <= 1.3)"
    )
    return figures


if __name__ == "__main__":
    import json

    print(json.dumps(run()))
