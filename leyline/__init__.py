"""Leyline contracts: versioned msgspec messages, the seed lifecycle, and their codec."""

from leyline._types import new_id
from leyline.actions import (
    DEFAULT_BLUEPRINTS,
    DEFAULT_CATALOG,
    SLOT_IDS,
    BlueprintCatalog,
    BlueprintSpec,
    action_to_command,
    blueprint_of,
    is_germinate,
)
from leyline.budgets import DEFAULT_BUDGETS, PerformanceBudgets
from leyline.commands import (
    AckOutcome,
    AckReason,
    AdaptationCommand,
    CommandAck,
    CommandType,
    RiskLevel,
    WorkerHello,
)
from leyline.control import Heartbeat, Ready, ReplayDone, ReplayRequest
from leyline.errors import BudgetError, ContractError, LeylineError, LifecycleError, RejectReason
from leyline.features import DEFAULT_BOUNDS, FeatureBounds, normalise_into, write_raw
from leyline.gates import (
    DEFAULT_GATE_THRESHOLDS,
    GateInputs,
    GateLevel,
    GateResult,
    GateThresholds,
    evaluate_gate,
    gate_for,
)
from leyline.guard import LifecycleGuard, Verdict
from leyline.lifecycle import (
    VALID_TRANSITIONS,
    SeedStage,
    is_active_stage,
    is_failure_stage,
    is_live_stage,
    is_terminal_stage,
    is_valid_transition,
    next_stage,
)
from leyline.registry import MessageDecoder, MessageEncoder, Registry, Upgrade, parse_tag, tag_of
from leyline.reports import FieldReport, SeedMetrics, SeedStateReport
from leyline.signals import (
    HISTORY_LENGTH,
    TENSOR_SCHEMA_SIZE,
    FastTrainingSignals,
    HistoryWindow,
    TensorSchema,
    TrainingMetrics,
    TrainingSignals,
)
from leyline.telemetry import (
    PAYLOAD_FOR_EVENT,
    SeedTelemetry,
    Severity,
    TelemetryEvent,
    TelemetryEventType,
    TelemetryPayload,
)
from leyline.tensors import BatchConverter, to_tensor
from leyline.wire import REGISTRY, Message, decode, encode

LEYLINE_VERSION = "0.2.0"

__all__ = [
    "DEFAULT_BLUEPRINTS",
    "DEFAULT_BOUNDS",
    "DEFAULT_BUDGETS",
    "DEFAULT_CATALOG",
    "DEFAULT_GATE_THRESHOLDS",
    "HISTORY_LENGTH",
    "LEYLINE_VERSION",
    "PAYLOAD_FOR_EVENT",
    "REGISTRY",
    "SLOT_IDS",
    "TENSOR_SCHEMA_SIZE",
    "VALID_TRANSITIONS",
    "AckOutcome",
    "AckReason",
    "AdaptationCommand",
    "BatchConverter",
    "BlueprintCatalog",
    "BlueprintSpec",
    "BudgetError",
    "CommandAck",
    "CommandType",
    "ContractError",
    "FastTrainingSignals",
    "FeatureBounds",
    "FieldReport",
    "GateInputs",
    "GateLevel",
    "GateResult",
    "GateThresholds",
    "Heartbeat",
    "HistoryWindow",
    "LeylineError",
    "LifecycleError",
    "LifecycleGuard",
    "Message",
    "MessageDecoder",
    "MessageEncoder",
    "PerformanceBudgets",
    "Ready",
    "Registry",
    "RejectReason",
    "ReplayDone",
    "ReplayRequest",
    "RiskLevel",
    "SeedMetrics",
    "SeedStage",
    "SeedStateReport",
    "SeedTelemetry",
    "Severity",
    "TelemetryEvent",
    "TelemetryEventType",
    "TelemetryPayload",
    "TensorSchema",
    "TrainingMetrics",
    "TrainingSignals",
    "Upgrade",
    "Verdict",
    "WorkerHello",
    "action_to_command",
    "blueprint_of",
    "decode",
    "encode",
    "evaluate_gate",
    "gate_for",
    "is_active_stage",
    "is_failure_stage",
    "is_germinate",
    "is_live_stage",
    "is_terminal_stage",
    "is_valid_transition",
    "new_id",
    "next_stage",
    "normalise_into",
    "parse_tag",
    "tag_of",
    "to_tensor",
    "write_raw",
]
