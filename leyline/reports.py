"""What workers report about seeds: live state on demand, and a summary of each finished life."""

from __future__ import annotations

from datetime import datetime

import msgspec

from leyline._types import Count, Finite, Ident, NonNegative, Percent, Text, Unit, new_id, utc_now
from leyline.lifecycle import SeedStage
from leyline.signals import TrainingSignals


class SeedMetrics(msgspec.Struct, kw_only=True):
    """Per-seed running metrics (accuracies in percent, improvements in points)."""

    epochs_total: Count = 0
    epochs_in_current_stage: Count = 0
    initial_val_accuracy: Percent = 0.0
    current_val_accuracy: Percent = 0.0
    best_val_accuracy: Percent = 0.0
    accuracy_at_stage_start: Percent = 0.0
    total_improvement: Finite = 0.0
    improvement_since_stage_start: Finite = 0.0
    isolation_violations: Count = 0
    gradient_norm_avg: NonNegative = 0.0
    current_alpha: Unit = 0.0
    alpha_ramp_step: Count = 0


class SeedStateReport(msgspec.Struct, kw_only=True, tag="SeedStateReport.v1"):
    """A worker's snapshot of one seed slot, sent on request and on every stage change."""

    seed_id: Ident = ""
    slot_id: Ident = ""
    blueprint_id: Ident = ""
    stage: SeedStage = SeedStage.UNKNOWN
    previous_stage: SeedStage = SeedStage.UNKNOWN
    stage_entered_at: datetime = msgspec.field(default_factory=utc_now)
    metrics: SeedMetrics = msgspec.field(default_factory=SeedMetrics)
    is_healthy: bool = True
    is_improving: bool = False
    needs_attention: bool = False
    annotations: dict[str, str | int | Finite] = msgspec.field(default_factory=dict)
    reported_at: datetime = msgspec.field(default_factory=utc_now)


class FieldReport(msgspec.Struct, kw_only=True, tag="FieldReport.v1"):
    """The whole life of one seed, sent once when it fossilizes or is culled."""

    report_id: Ident = msgspec.field(default_factory=new_id)
    seed_id: Ident = ""
    blueprint_id: Ident = ""
    slot_id: Ident = ""
    final_stage: SeedStage = SeedStage.UNKNOWN
    success: bool = False
    germinated_at: datetime = msgspec.field(default_factory=utc_now)
    completed_at: datetime = msgspec.field(default_factory=utc_now)
    total_epochs: Count = 0
    epochs_per_stage: dict[str, Count] = msgspec.field(default_factory=dict)
    accuracy_at_germination: Percent = 0.0
    accuracy_at_completion: Percent = 0.0
    total_improvement: Finite = 0.0
    best_accuracy_achieved: Percent = 0.0
    signals_at_germination: TrainingSignals | None = None
    commands_received: list[Ident] = msgspec.field(default_factory=list)
    failure_reason: Text = ""
    failure_stage: SeedStage = SeedStage.UNKNOWN
