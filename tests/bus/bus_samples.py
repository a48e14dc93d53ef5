"""Valid messages for every channel, and forged frames as a hostile peer would write them."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime
from typing import Any

import msgspec

from bus import CHANNEL_CONTRACTS, Channel, topic
from bus.header import TERMINATOR, WIRE_VERSION, array_prefix, encode_head
from leyline import (
    AckOutcome,
    AdaptationCommand,
    CommandAck,
    CommandType,
    FastTrainingSignals,
    FieldReport,
    Message,
    SeedStage,
    SeedStateReport,
    SeedTelemetry,
    TelemetryEvent,
    TelemetryEventType,
    TrainingSignals,
    WorkerHello,
    new_id,
)
from leyline.telemetry import SeedStageChanged
from leyline.wire import encode

NOW = datetime(2025, 12, 2, 12, 0, tzinfo=UTC)
SLOT = "block2_post"


def fast_signals(epoch: int = 12, slot_index: int = 0) -> FastTrainingSignals:
    """A mid-training signal with every field populated and in range."""
    loss, accuracy = max(2.3 - 0.07 * epoch, 0.1), min(30.0 + 2.2 * epoch, 90.0)
    return FastTrainingSignals.of(
        epoch, 98 * epoch, loss - 0.05, loss, 0.07, accuracy + 1.5, accuracy, 2.2, epoch % 4,
        accuracy, loss, (loss + 0.2, loss + 0.1, loss, loss, loss),
        (accuracy - 2, accuracy - 1, accuracy, accuracy, accuracy), 1, SeedStage.TRAINING,
        epoch % 5, 0.25, 0.8, 0, slot_index,
    )  # fmt: skip


def advance(slot: str = SLOT, to: SeedStage | None = SeedStage.BLENDING) -> AdaptationCommand:
    """An ADVANCE_STAGE command for `slot`, explicit target `to`."""
    return AdaptationCommand(
        command_id=new_id(),
        command_type=CommandType.ADVANCE_STAGE,
        target_slot_id=slot,
        target_stage=to,
        timestamp=NOW,
    )


def stage_changed(from_stage: SeedStage, to_stage: SeedStage, slot: str = SLOT) -> TelemetryEvent:
    """The event a worker publishes when a seed moves between stages."""
    return TelemetryEvent(
        event_type=TelemetryEventType.SEED_STAGE_CHANGED,
        payload=SeedStageChanged(seed_id="seed-1", from_stage=from_stage, to_stage=to_stage),
        slot_id=slot,
        timestamp=NOW,
    )


def _samples() -> list[msgspec.Struct]:
    """One or more valid instances of every contract any channel carries."""
    return [
        advance(),
        AdaptationCommand(
            command_id=new_id(),
            command_type=CommandType.GERMINATE,
            target_slot_id=SLOT,
            blueprint_id="conv_enhance",
            timestamp=NOW,
        ),
        AdaptationCommand(
            command_id=new_id(),
            command_type=CommandType.SET_ALPHA,
            target_seed_id="seed-1",
            alpha_value=0.5,
        ),
        fast_signals(),
        FastTrainingSignals.empty(3),
        CommandAck(
            command_id=str(uuid.UUID(int=7)),
            worker_id="w1",
            outcome=AckOutcome.APPLIED,
            command_type=CommandType.GERMINATE,
            stage_after=SeedStage.GERMINATED,
        ),
        WorkerHello(worker_id="w1", last_applied_sequence=41),
        stage_changed(SeedStage.GERMINATED, SeedStage.TRAINING),
        SeedTelemetry(seed_id="seed-1", captured_at=NOW, gradient_norm=0.12),
        SeedStateReport(
            seed_id="seed-1",
            slot_id=SLOT,
            stage=SeedStage.TRAINING,
            previous_stage=SeedStage.GERMINATED,
        ),
        FieldReport(seed_id="seed-1", final_stage=SeedStage.FOSSILIZED, success=True),
        TrainingSignals(loss_history=[1.5, 1.4], accuracy_history=[50.0, 51.0]),
    ]


def channel_samples() -> dict[Channel, list[Message]]:
    """The samples grouped by the channel that carries their contract."""
    grouped: dict[Channel, list[Message]] = {channel: [] for channel in Channel}
    for sample in _samples():
        for channel, contracts in CHANNEL_CONTRACTS.items():
            if type(sample) in contracts:
                grouped[channel].append(sample)  # type: ignore[arg-type]
    return grouped


def header(
    sender: str = "evil",
    sequence: int = 1,
    *,
    incarnation: int = 1,
    sent_ns: int | None = None,
    wire_version: int = WIRE_VERSION,
    count: int = 1,
) -> bytes:
    """An encoded header (fixed part and sender) with any values a forger likes."""
    sent = time.time_ns() if sent_ns is None else sent_ns
    head = encode_head(sender.encode(), incarnation, sequence, sent, count)
    return bytes((wire_version,)) + head[1:]


def wire(topic_frame: bytes, head: bytes, body: bytes) -> list[bytes]:
    """One wire frame from its three parts, as the one-part list ZeroMQ sends."""
    return [topic_frame + TERMINATOR + head + body]


def frames(
    channel: Channel, scope: str, message: Message, sequence: int = 1, sender: str = "evil"
) -> list[bytes]:
    """The frame a well-formed publisher would send for `message`."""
    return wire(topic(channel, scope), header(sender, sequence), encode(message))


def batch(
    channel: Channel, scope: str, payloads: list[bytes], sequence: int = 1, sender: str = "evil"
) -> list[bytes]:
    """One frame carrying `payloads` (encoded messages, or anything) from `sequence` on."""
    body = array_prefix(len(payloads)) + b"".join(payloads)
    return wire(topic(channel, scope), header(sender, sequence, count=len(payloads)), body)


def as_fields(message: Message) -> list[Any]:
    """An array-like message as its raw msgpack list: tag first, then the fields."""
    fields: list[Any] = msgspec.msgpack.decode(encode(message))
    return fields


def forged(fields: list[Any]) -> bytes:
    """Raw msgpack of `fields`, with no contract checks at all."""
    return msgspec.msgpack.encode(fields)


def forged_signal(name: str, value: Any) -> bytes:
    """A FastTrainingSignals.v1 payload (a field per value, each checked at decode) with field
    `name` replaced by `value`. v2 carries the values in one block, checked per batch by the
    receiver (tests/leyline/test_fast_signals.py)."""
    named = fast_signals().named()
    fields: list[Any] = msgspec.msgpack.decode(msgspec.msgpack.encode(named))
    fields[1 + type(named).__struct_fields__.index(name)] = value  # after the tag
    return forged(fields)
