"""Performance budgets, declared once. Sizes are enforced at encode; times by the benchmarks."""

from __future__ import annotations

import msgspec

__all__ = [
    "DEFAULT_BUDGETS",
    "PerformanceBudgets",
]


class PerformanceBudgets(msgspec.Struct, frozen=True, kw_only=True):
    """The spec's budgets, plus the payload caps the bus enforces.

    `max_message_size_bytes` (the spec's 280) binds the hot path, FastTrainingSignals;
    commands carry ids and a timestamp, so they get `max_command_size_bytes`; everything
    else is capped by `max_payload_bytes`; the socket's ZMQ_MAXMSGSIZE is a few times more.
    """

    epoch_budget_ms: float = 18.0
    blending_budget_ms: float = 5.0
    gate_check_budget_ms: float = 2.0
    seed_memory_budget_gb: float = 2.0
    total_memory_budget_gb: float = 12.0
    max_message_size_bytes: int = 280
    max_command_size_bytes: int = 512
    max_payload_bytes: int = 65_536
    serialization_budget_us: float = 80.0


DEFAULT_BUDGETS = PerformanceBudgets()
