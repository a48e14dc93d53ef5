"""The registry of every Leyline wire type, with their budgets, and the shared codec."""

from __future__ import annotations

from leyline.budgets import DEFAULT_BUDGETS
from leyline.commands import (
    AdaptationCommand,
    AdaptationCommandV1,
    CommandAck,
    CommandAckV1,
    WorkerHello,
    lift_ack_v1,
    lift_v1,
)
from leyline.control import Heartbeat, Ready, ReplayDone, ReplayRequest
from leyline.registry import MessageDecoder, MessageEncoder, Registry, Upgrade
from leyline.reports import FieldReport, SeedStateReport
from leyline.signals import FastTrainingSignals, FastTrainingSignalsV1, TrainingSignals
from leyline.telemetry import SeedTelemetry, TelemetryEvent, TelemetryEventV1, lift_telemetry_v1

__all__ = [
    "REGISTRY",
    "Message",
    "decode",
    "encode",
]

REGISTRY = Registry()
REGISTRY.register(
    FastTrainingSignals,
    budget=DEFAULT_BUDGETS.max_message_size_bytes,
    upgrades=[Upgrade(FastTrainingSignalsV1, FastTrainingSignalsV1.lift)],
)
REGISTRY.register(
    AdaptationCommand,
    budget=DEFAULT_BUDGETS.max_command_size_bytes,
    upgrades=[Upgrade(AdaptationCommandV1, lift_v1)],
)
REGISTRY.register(
    CommandAck,
    budget=DEFAULT_BUDGETS.max_command_size_bytes,
    upgrades=[Upgrade(CommandAckV1, lift_ack_v1)],
)
REGISTRY.register(WorkerHello, budget=DEFAULT_BUDGETS.max_command_size_bytes)
REGISTRY.register(TelemetryEvent, upgrades=[Upgrade(TelemetryEventV1, lift_telemetry_v1)])
for _cls in (
    TrainingSignals,
    SeedStateReport,
    FieldReport,
    SeedTelemetry,
    Heartbeat,
    Ready,
    ReplayRequest,
    ReplayDone,
):
    REGISTRY.register(_cls)

Message = (
    FastTrainingSignals
    | AdaptationCommand
    | CommandAck
    | TrainingSignals
    | SeedStateReport
    | FieldReport
    | TelemetryEvent
    | SeedTelemetry
    | Heartbeat
    | Ready
    | ReplayRequest
    | ReplayDone
    | WorkerHello
)

_ENCODER: MessageEncoder = REGISTRY.encoder()
_DECODER: MessageDecoder = REGISTRY.decoder()


def encode(message: Message) -> bytes:
    """Encode any registered message, refusing one over its size budget."""
    return _ENCODER.encode(message)


def decode(data: bytes | memoryview) -> Message:
    """Decode any registered message; `ContractError` (with reason and path) otherwise."""
    message: Message = _DECODER.decode(data)
    return message
