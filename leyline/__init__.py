"""Leyline contracts: the versioned messages, their enums and errors, and the seed lifecycle.

The package root holds what a peer speaks and handles; the machinery lives in topical modules:

- `leyline.wire`: the codec (`encode`, `decode`) and the `REGISTRY` of every wire tag;
  `leyline.registry` builds registries, encoders and decoders, and reads tags.
- `leyline.lifecycle`: the stage graph and its predicates; `leyline.gates`: quality gates.
- `leyline.actions`: the blueprint catalogue, slot ids and the policy's discrete actions.
- `leyline.signals`, `leyline.features`: signal layout, history windows and feature scaling;
  `leyline.tensors`: signals to torch tensors (imports torch when first called).
- `leyline.budgets`: size and time budgets; `leyline.schema`: the schema lock.
"""

from leyline._types import new_id
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
from leyline.guard import LifecycleGuard, Verdict
from leyline.lifecycle import SeedStage
from leyline.reports import FieldReport, SeedMetrics, SeedStateReport
from leyline.signals import FastTrainingSignals, TrainingMetrics, TrainingSignals
from leyline.telemetry import (
    SeedTelemetry,
    Severity,
    TelemetryEvent,
    TelemetryEventType,
    TelemetryPayload,
)
from leyline.wire import Message

#: The package's version, and the distribution's: pyproject.toml reads it from here.
LEYLINE_VERSION = "0.2.0"

__all__ = [
    "LEYLINE_VERSION",
    "AckOutcome",
    "AckReason",
    "AdaptationCommand",
    "BudgetError",
    "CommandAck",
    "CommandType",
    "ContractError",
    "FastTrainingSignals",
    "FieldReport",
    "Heartbeat",
    "LeylineError",
    "LifecycleError",
    "LifecycleGuard",
    "Message",
    "Ready",
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
    "TrainingMetrics",
    "TrainingSignals",
    "Verdict",
    "WorkerHello",
    "new_id",
]
