"""Fast signals in columns: the same checks, refusals, counts and sequence state as the
per-message path, over real sockets and against it for random mixes of good and bad frames."""

from __future__ import annotations

import struct
from collections import Counter
from typing import Any

import msgspec
import numpy as np
import pytest
import zmq
from bus_loops import ANY_PORT, handshake, pump_until
from bus_samples import fast_signals, forged, header, wire
from hypothesis import given, settings
from hypothesis import strategies as st

from bus import Channel, Publisher, Rejection, Subscriber, topic
from bus.columnar import RECORD_BYTES, ColumnReceiver, SignalColumns
from bus.header import array_prefix
from bus.pipeline import Envelope, Pipeline
from leyline import FastTrainingSignals, RejectReason
from leyline.signals import FEATURE_BLOCK
from leyline.wire import encode

R = RejectReason
NOW = 10**18
MAX_AGE_NS = 5 * 10**9
#: What a row is compared by: sender, sequence, epoch, slot and the raw feature bytes.
Row = tuple[str, int, int, int, bytes]


def _rows(block: SignalColumns) -> list[Row]:
    return list(
        zip(
            block.senders(),
            block.sequences(),
            block.epoch.tolist(),
            block.slot_index.tolist(),
            [row.tobytes() for row in block.features],
            strict=True,
        )
    )


def _envelope_rows(outcomes: list[Any]) -> list[Row]:
    return [
        (o.header.sender, o.header.sequence, o.message.epoch, o.message.slot_index,
         o.message.features)
        for o in outcomes
        if isinstance(o, Envelope)
    ]  # fmt: skip


def _signal(epoch: int, slot: int = 0, seed: int = 0) -> bytes:
    """A v2 payload; `seed` varies the features (NaN too: values are not the bus's check)."""
    values = list(FEATURE_BLOCK.unpack(fast_signals(epoch % 100, slot).features))
    values[2] = float("nan") if seed % 7 == 3 else values[2] + seed
    return encode(FastTrainingSignals(epoch, FEATURE_BLOCK.pack(*values), slot))


def _frame(sender: str, sequence: int, payloads: list[bytes], **head: Any) -> bytes:
    """One frame of `payloads` as a publisher writes it (a lone message without an array)."""
    count = len(payloads)
    body = payloads[0] if count == 1 else array_prefix(count) + b"".join(payloads)
    [frame] = wire(topic(Channel.SIG, sender), header(sender, sequence, count=count, **head), body)
    return frame


# --- the property: columns == messages ------------------------------------------------------

_BAD_ROWS = {
    "another major": forged(["FastTrainingSignals.v9", 1, b"\x00" * 108, 0]),
    "short block": forged(["FastTrainingSignals.v2", 1, b"\x00" * 107, 0]),
    "negative epoch": forged(["FastTrainingSignals.v2", -1, b"\x00" * 108, 0]),
    "not msgpack": b"\xc1" * RECORD_BYTES,
    "same size, wrong bytes": b"\x94" + b"\xff" * (RECORD_BYTES - 1),
}


@st.composite
def _traffic(draw: st.DrawFn) -> list[bytes]:
    """Frames from two senders: in order, with bad rows, wide epochs and slots, repeats,
    gaps, restarts, stale and future frames, lies about the count, and garbage."""
    streams = {"a": [1, 1], "b": [1, 1]}  # incarnation, next sequence
    sent: list[bytes] = []
    frames: list[bytes] = []
    for _ in range(draw(st.integers(1, 14))):
        sender = draw(st.sampled_from(sorted(streams)))
        incarnation, sequence = streams[sender]
        kind = draw(
            st.sampled_from(
                ["good"] * 6 + ["bad row", "wide", "repeat", "gap", "restart", "stale",
                               "future", "lie", "garbage"]
            )
        )  # fmt: skip
        count = draw(st.integers(1, 24))
        payloads = [_signal(draw(st.integers(0, 127)), n % 2, n) for n in range(count)]
        head: dict[str, Any] = {"incarnation": incarnation, "sent_ns": NOW}
        if kind == "repeat" and sent:
            frames.append(draw(st.sampled_from(sent)))
            continue
        if kind == "garbage":
            frames.append(b"sig.a.\x00" + draw(st.binary(max_size=60)))
            continue
        if kind == "bad row":
            payloads[draw(st.integers(0, count - 1))] = _BAD_ROWS[
                draw(st.sampled_from(sorted(_BAD_ROWS)))
            ]
        elif kind == "wide":  # valid, but not the one-byte record: lifted to columns the slow way
            payloads[draw(st.integers(0, count - 1))] = _signal(draw(st.integers(128, 70_000)), 1)
        elif kind == "gap":
            sequence += draw(st.integers(1, 5))
        elif kind == "restart":
            incarnation, sequence = incarnation + 1, 1
            head["incarnation"] = incarnation
        elif kind == "stale":
            head["sent_ns"] = NOW - MAX_AGE_NS - draw(st.integers(1, 10**9))
        elif kind == "future":
            head["incarnation"] = NOW + 2 * 3600 * 10**9
        frame = _frame(sender, sequence, payloads, **head)
        if kind == "lie":
            frame = _frame(sender, sequence, payloads[:-1] or payloads, **head)
            frame = _recount(frame, count + 1)
        frames.append(frame)
        sent.append(frame)
        if kind != "future":
            streams[sender] = [incarnation, sequence + count]
    return frames


def _recount(frame: bytes, count: int) -> bytes:
    """The frame with its header's count replaced (a lie about the body)."""
    at = frame.index(b"\x00") + 1 + 2
    return frame[:at] + struct.pack("<H", count) + frame[at + 2 :]


def _pipeline() -> Pipeline:
    return Pipeline([Channel.SIG], max_signal_age_ns=MAX_AGE_NS, clock=lambda: NOW)


def _state(pipeline: Pipeline) -> tuple[Any, ...]:
    streams = {key: (s.incarnation, s.last, s.seen) for key, s in pipeline.tracker._streams.items()}
    metrics = pipeline.metrics
    rejected = {reason: n for reason, n in metrics.rejected.items() if n}
    return streams, pipeline.tracker.gaps, rejected, dict(metrics.received)


def _reasons(rejections: list[Rejection]) -> Counter[tuple[RejectReason, str, str]]:
    return Counter((r.reason, r.sender, r.detail) for r in rejections)


@settings(max_examples=150, deadline=None)
@given(_traffic(), st.integers(0, 40), st.integers(1, 64), st.data())
def test_columns_equal_the_per_message_path(
    frames: list[bytes], min_rows: int, max_rows: int, data: st.DataObject
) -> None:
    messages = _pipeline()
    expected_rows: list[Row] = []
    expected_rejections: list[Rejection] = []
    for frame in frames:
        outcomes = messages.frame(frame)
        expected_rows += _envelope_rows(outcomes)
        expected_rejections += [o for o in outcomes if isinstance(o, Rejection)]

    columns = _pipeline()
    rows: list[Row] = []
    rejections: list[Rejection] = []

    def deliver(block: SignalColumns) -> None:
        assert len(block) <= max(max_rows, 24)  # a block holds one whole frame at least
        # The flat group columns the receiver collects are its groups' own.
        assert block.group_senders == [group.sender for group in block.groups]
        assert block.group_starts.tolist() == [group.start for group in block.groups]
        rows.extend(_rows(block))

    receiver = ColumnReceiver(columns, deliver, rejections.append, max_rows, min_rows)
    for frame in frames:
        if data.draw(st.booleans(), "drain ends here"):
            receiver.flush()
        receiver.add(frame, None)
    receiver.flush()

    assert rows == expected_rows
    assert _reasons(rejections) == _reasons(expected_rejections)
    assert _state(columns) == _state(messages)


def test_a_drain_of_fixed_records_is_taken_whole() -> None:
    blocks: list[SignalColumns] = []
    rejections: list[Rejection] = []
    receiver = ColumnReceiver(_pipeline(), blocks.append, rejections.append, max_rows=256)
    first = [_frame(s, 1, [_signal(1, n % 2, n) for n in range(32)]) for s in ("a", "b")]
    second = [_frame(s, 33, [_signal(2, n % 2, n) for n in range(32)]) for s in ("a", "b")]
    for frame in first + second:
        receiver.add(frame, None)
    receiver.flush()
    [block] = blocks
    assert not rejections
    # Each stream's first frame goes the per-message way (FIRST); what follows comes whole.
    assert (receiver.fallback_frames, receiver.columnar_frames) == (2, 2)
    assert len(block) == 128
    assert block.sequences() == [*range(1, 33), *range(1, 33), *range(33, 65), *range(33, 65)]
    assert block.senders() == ["a"] * 32 + ["b"] * 32 + ["a"] * 32 + ["b"] * 32
    assert block.epoch.tolist() == [1] * 64 + [2] * 64
    assert block.slot_index.tolist() == [0, 1] * 64
    expected = np.frombuffer(fast_signals(2, 1).features, "<f4")
    assert np.array_equal(block.features[-1, 3:], expected[3:])  # one row as its block says


# --- over real sockets ----------------------------------------------------------------------


@pytest.fixture
def raw_peer(context: zmq.Context[zmq.Socket[bytes]]) -> Any:
    """A raw XPUB that writes any frames, and a subscriber taking `sig` in columns."""
    peer = context.socket(zmq.XPUB)
    peer.setsockopt(zmq.LINGER, 0)
    address = peer.bind(ANY_PORT).addr
    subscriber = Subscriber(address, [(Channel.SIG, None)], context=context)
    blocks: list[list[Row]] = []
    rejected: list[Rejection] = []
    subscriber.on_columns(Channel.SIG, lambda block: blocks.append(_rows(block)), min_rows=0)
    subscriber.on_rejection(rejected.append)
    expected = {b"\x01sig.", b"\x01sig.*."}
    while expected:
        assert peer.poll(5_000), f"subscriptions never arrived: {expected}"
        expected.discard(peer.recv())
    yield peer, subscriber, blocks, rejected
    subscriber.close()
    peer.close()


def test_hostile_rows_in_a_batch_are_refused_by_name_and_the_rest_delivered(raw_peer: Any) -> None:
    peer, subscriber, blocks, rejected = raw_peer
    good = [_signal(3, n % 2, n) for n in range(40)]
    peer.send(_frame("w1", 1, good[:20]))  # the stream's first frame
    hostile = list(good[20:])
    hostile[4] = _BAD_ROWS["another major"]
    hostile[9] = _BAD_ROWS["short block"]
    hostile[15] = _BAD_ROWS["negative epoch"]
    peer.send(_frame("w1", 21, hostile))
    peer.send(_frame("w1", 41, good[:20]))

    def delivered() -> list[Row]:
        return [row for block in blocks for row in block]

    assert pump_until(lambda: len(delivered()) == 57 and len(rejected) == 3, subscriber)
    sequences = [row[1] for row in delivered()]
    assert sequences == [n for n in range(1, 61) if n not in (25, 30, 36)]
    refused = {R.UNSUPPORTED_VERSION: 1, R.INVALID_VALUE: 2}
    assert Counter(r.reason for r in rejected) == refused
    assert {reason: n for reason, n in subscriber.metrics.rejected.items() if n} == refused
    assert subscriber.metrics.delivered[Channel.SIG] == 57
    assert subscriber.metrics.received[Channel.SIG] == 60
    # The refused rows are a gap a subscriber may ask for again, as on the per-message path.
    assert subscriber.metrics.gaps == 3


def test_a_publishers_burst_arrives_in_columns_in_order(
    context: zmq.Context[zmq.Socket[bytes]],
) -> None:
    publisher = Publisher(ANY_PORT, "w1", context=context)
    subscriber = Subscriber(publisher.address, [(Channel.SIG, None)], context=context)
    blocks: list[SignalColumns] = []
    rows: list[Row] = []

    def sink(block: SignalColumns) -> None:
        blocks.append(block)
        rows.extend(_rows(block))

    registration = subscriber.on_columns(Channel.SIG, sink)
    try:
        handshake(subscriber, publisher)
        signals = [fast_signals(epoch % 100, epoch % 2) for epoch in range(1, 601)]
        publisher.publish_many(Channel.SIG, signals, "w1")
        publisher.flush()
        assert pump_until(lambda: len(rows) == 600, subscriber, publishers=(publisher,))
        assert [row[1] for row in rows] == list(range(1, 601))
        assert [row[2] for row in rows] == [s.epoch for s in signals]
        assert all(len(block) <= 1024 for block in blocks)
        assert subscriber.metrics.delivered[Channel.SIG] == 600
        assert subscriber.metrics.rejected_total == 0
        # Cancelled, the channel's messages come as envelopes again.
        registration.cancel()
        publisher.publish(Channel.SIG, fast_signals(1), "w1")
        envelope = None
        for _ in range(200):
            envelope = subscriber.receive(0.05)
            if envelope is not None:
                break
        assert envelope is not None and envelope.header.sequence == 601
        assert len(rows) == 600
    finally:
        subscriber.close()
        publisher.close()


def test_a_failing_sink_is_a_named_rejection_per_row(raw_peer: Any) -> None:
    peer, subscriber, _, rejected = raw_peer

    def broken(block: SignalColumns) -> None:
        raise RuntimeError("sink bug")

    subscriber.on_columns(Channel.SIG, broken)
    peer.send(_frame("w1", 1, [_signal(1, 0, n) for n in range(5)]))
    assert pump_until(lambda: bool(rejected), subscriber)
    assert rejected[0].reason is R.HANDLER_ERROR
    assert "sink bug" in rejected[0].detail
    assert subscriber.metrics.rejected[R.HANDLER_ERROR] == 5
    assert subscriber.metrics.delivered[Channel.SIG] == 0


def test_only_the_signal_channel_comes_in_columns(
    context: zmq.Context[zmq.Socket[bytes]],
) -> None:
    subscriber = Subscriber([], [(Channel.TEL, None)], context=context)
    try:
        with pytest.raises(ValueError, match="sig"):
            subscriber.on_columns(Channel.TEL, lambda block: None)
        with pytest.raises(ValueError, match="sig"):
            subscriber.on_columns(Channel.SIG, lambda block: None)  # not subscribed
    finally:
        subscriber.close()


def test_the_record_layout_is_the_contracts_encoding() -> None:
    payload = encode(fast_signals(5, 1))
    assert len(payload) == RECORD_BYTES
    fields = msgspec.msgpack.decode(payload)
    assert fields[0] == FastTrainingSignals.__struct_config__.tag
    assert (fields[1], fields[3]) == (5, 1)


def test_a_replayed_signal_reaches_the_column_sink(raw_peer: Any) -> None:
    _, subscriber, blocks, rejected = raw_peer
    payload = _signal(4, 1, 2)
    assert subscriber.replayed([_frame("w1", 7, [payload])]) is None
    features = msgspec.msgpack.decode(payload)[2]
    assert blocks == [[("w1", 7, 4, 1, features)]]
    assert not rejected
    assert subscriber.metrics.delivered[Channel.SIG] == 1
