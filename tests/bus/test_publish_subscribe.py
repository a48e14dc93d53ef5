"""Publish to subscribe over the in-process bus: every contract, scopes, sequences, handlers."""

from __future__ import annotations

import pytest
from bus_loops import pump_until
from bus_samples import channel_samples, fast_signals

from bus import CHANNEL_CONTRACTS, Channel, Envelope, Rejection
from bus.testing import InProcessBus, capture_rejections
from leyline import RejectReason


def test_samples_cover_every_contract_of_every_channel() -> None:
    samples = channel_samples()
    for channel, contracts in CHANNEL_CONTRACTS.items():
        assert {type(m) for m in samples[channel]} == set(contracts), channel


@pytest.mark.parametrize("channel", list(Channel))
def test_every_contract_of_a_channel_round_trips(inproc: InProcessBus, channel: Channel) -> None:
    publisher = inproc.publisher("w1")
    subscriber = inproc.subscriber([(channel, None)])
    inproc.connect(publisher, subscriber)
    received: list[Envelope] = []
    subscriber.on(channel, received.append)
    sent = channel_samples()[channel]
    for message in sent:
        publisher.publish(channel, message, "w1", correlation_id="c-1")
    assert pump_until(lambda: len(received) == len(sent), subscriber)
    assert [e.message for e in received] == sent
    assert all(type(e.message) in CHANNEL_CONTRACTS[channel] for e in received)
    assert {(e.channel, e.scope, e.header.sender, e.header.correlation_id) for e in received} == {
        (channel, "w1", "w1", "c-1")
    }
    assert subscriber.metrics.delivered[channel] == len(sent)
    assert publisher.metrics.sent[channel] == len(sent)
    assert subscriber.metrics.rejected_total == 0


def test_subscriber_to_w1_never_receives_w10(inproc: InProcessBus) -> None:
    publisher = inproc.publisher("controller")
    subscriber = inproc.subscriber([(Channel.SIG, "w1")])
    inproc.connect(publisher, subscriber)
    scopes: list[str] = []
    subscriber.on(Channel.SIG, lambda e: scopes.append(e.scope))
    for scope in ("w10", "w1", "w1x", "w100", "w1"):
        publisher.publish(Channel.SIG, fast_signals(), scope)
    # A marker on w1 sent last: once it arrives everything sent before it has been seen.
    publisher.publish(Channel.SIG, fast_signals(epoch=99), "w1")
    assert pump_until(lambda: len(scopes) == 3, subscriber)
    subscriber.poll(0)
    assert scopes == ["w1", "w1", "w1"]
    assert subscriber.metrics.rejected_total == 0


def test_a_publisher_scopes_to_its_own_sender_id_unless_told(inproc: InProcessBus) -> None:
    publisher = inproc.publisher("w7")
    subscriber = inproc.subscriber([(Channel.SIG, None)])
    inproc.connect(publisher, subscriber)
    scopes: list[str] = []
    subscriber.on(Channel.SIG, lambda e: scopes.append(e.scope))
    publisher.publish(Channel.SIG, fast_signals())
    publisher.publish(Channel.SIG, fast_signals(), "w8")
    assert publisher.publish_many(Channel.SIG, [fast_signals(), fast_signals()]) == 2
    publisher.publish_many(Channel.SIG, [fast_signals()], "w9")
    assert pump_until(lambda: len(scopes) == 5, subscriber)
    assert scopes == ["w7", "w8", "w7", "w7", "w9"]


def test_sequences_count_per_topic(inproc: InProcessBus) -> None:
    publisher = inproc.publisher("controller")
    subscriber = inproc.subscriber([(Channel.CMD, None), (Channel.SIG, None)])
    inproc.connect(publisher, subscriber)
    seen: list[tuple[bytes, int]] = []
    for channel in (Channel.CMD, Channel.SIG):
        subscriber.on(channel, lambda e: seen.append((e.topic, e.header.sequence)))
    order = [(Channel.SIG, "w1"), (Channel.SIG, "w2"), (Channel.SIG, "w1"), (Channel.CMD, "w1")]
    returned = [publisher.publish(c, channel_samples()[c][0], s) for c, s in order + order]
    assert returned == [1, 1, 2, 1, 3, 2, 4, 2]
    assert pump_until(lambda: len(seen) == len(returned), subscriber)
    for name in (b"sig.w1.", b"sig.w2.", b"cmd.w1."):
        sequences = [sequence for t, sequence in seen if t == name]
        assert sequences == list(range(1, len(sequences) + 1))
    assert publisher.last_sequences(Channel.SIG) == {"sig.w1.": 4, "sig.w2.": 2}
    assert subscriber.metrics.gaps == 0


def test_handlers_see_only_their_channel_and_valid_typed_messages(inproc: InProcessBus) -> None:
    publisher = inproc.publisher("w1")
    subscriber = inproc.subscriber([(c, None) for c in Channel])
    inproc.connect(publisher, subscriber)
    by_channel: dict[Channel, list[Envelope]] = {c: [] for c in Channel}
    for channel in Channel:
        subscriber.on(channel, by_channel[channel].append)
    samples = channel_samples()
    total = sum(len(messages) for messages in samples.values())
    for channel, messages in samples.items():
        for message in messages:
            publisher.publish(channel, message, "w1")
    assert pump_until(lambda: sum(map(len, by_channel.values())) == total, subscriber)
    for channel, envelopes in by_channel.items():
        assert [e.message for e in envelopes] == samples[channel]
        assert all(e.channel is channel and not e.is_control for e in envelopes)


def test_handler_that_raises_is_handler_error_and_delivery_goes_on(
    inproc: InProcessBus,
) -> None:
    publisher = inproc.publisher("w1")
    subscriber = inproc.subscriber([(Channel.SIG, None)])
    inproc.connect(publisher, subscriber)
    delivered: list[int] = []

    def fragile(envelope: Envelope) -> None:
        if envelope.message.epoch % 3 == 0:
            raise RuntimeError(f"cannot handle epoch {envelope.message.epoch}")
        delivered.append(envelope.message.epoch)

    subscriber.on(Channel.SIG, fragile)
    with capture_rejections(subscriber) as rejected:
        for epoch in range(1, 10):
            publisher.publish(Channel.SIG, fast_signals(epoch), "w1")
        assert pump_until(lambda: len(delivered) + len(rejected) == 9, subscriber)
    assert delivered == [1, 2, 4, 5, 7, 8]
    assert [r.reason for r in rejected] == [RejectReason.HANDLER_ERROR] * 3
    assert [r.message.epoch for r in rejected] == [3, 6, 9]
    assert all(isinstance(r, Rejection) and "epoch" in r.detail for r in rejected)
    assert rejected[0].sender == "w1" and rejected[0].topic == "sig.w1."
    assert subscriber.metrics.rejected[RejectReason.HANDLER_ERROR] == 3
    assert subscriber.metrics.delivered[Channel.SIG] == 6


def test_rejection_handler_that_raises_does_not_stop_delivery(inproc: InProcessBus) -> None:
    publisher = inproc.publisher("w1")
    subscriber = inproc.subscriber([(Channel.SIG, None)])
    inproc.connect(publisher, subscriber)
    delivered: list[Envelope] = []

    def broken(envelope: Envelope) -> None:
        raise ValueError("handler bug")

    def broken_rejection_handler(rejection: Rejection) -> None:
        raise ValueError("rejection handler bug")

    subscriber.on(Channel.SIG, delivered.append)
    subscriber.on(Channel.SIG, broken)
    subscriber.on_rejection(broken_rejection_handler)
    for epoch in range(3):
        publisher.publish(Channel.SIG, fast_signals(epoch), "w1")
    assert pump_until(lambda: subscriber.metrics.rejected_total == 3, subscriber)
    assert len(delivered) == 3
