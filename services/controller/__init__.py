"""The controller's decision core: policies, legal-action masks and the inference loop."""

from services.controller.batcher import SignalBatcher
from services.controller.columns import Column, ColumnBuffer, ObservationBatch, pick_device
from services.controller.decisions import Decision, Decisions
from services.controller.heuristic import (
    DEFAULT_ROTATIONS,
    DEFAULT_THRESHOLDS,
    HeuristicPolicy,
    HeuristicThresholds,
)
from services.controller.inference import InferenceLoop
from services.controller.layout import ActionLayout
from services.controller.loading import load_policy
from services.controller.masks import ActionMasker
from services.controller.mlp import MlpPolicy
from services.controller.module_policy import ModulePolicy, PolicyError
from services.controller.pending import PendingSignal
from services.controller.policy import ControlPolicy, DecisionReason, PolicyOutput

__all__ = [
    "DEFAULT_ROTATIONS",
    "DEFAULT_THRESHOLDS",
    "ActionLayout",
    "ActionMasker",
    "Column",
    "ColumnBuffer",
    "ControlPolicy",
    "Decision",
    "DecisionReason",
    "Decisions",
    "HeuristicPolicy",
    "HeuristicThresholds",
    "InferenceLoop",
    "MlpPolicy",
    "ModulePolicy",
    "ObservationBatch",
    "PendingSignal",
    "PolicyError",
    "PolicyOutput",
    "SignalBatcher",
    "load_policy",
    "pick_device",
]
