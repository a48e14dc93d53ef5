"""What a slot tells the outside: its state report, its seed's telemetry, a finished life."""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec

from leyline import FieldReport, SeedStage, SeedStateReport, SeedTelemetry
from leyline.telemetry import SeedCulled, SeedFossilized
from services.worker.blueprints import parameter_count

if TYPE_CHECKING:
    from services.worker.slot import SeedSlot


def state_report(slot: SeedSlot) -> SeedStateReport:
    """A snapshot of the slot for the controller (metrics copied, not shared)."""
    m = slot.metrics
    healthy = slot.health.healthy
    annotations: dict[str, str | int | float] = {
        "paused": int(slot.paused),
        "alpha_pinned": int(slot.alpha_pinned),
    }
    if slot.last_gate is not None:
        annotations["last_gate"] = f"G{int(slot.last_gate.gate)} {slot.last_gate.message}"
    return SeedStateReport(
        seed_id=slot.seed_id,
        slot_id=slot.slot_id,
        blueprint_id=slot.blueprint_id,
        stage=slot.stage,
        previous_stage=slot.previous_stage,
        stage_entered_at=slot.stage_entered_at,
        metrics=msgspec.structs.replace(m),
        is_healthy=healthy,
        is_improving=m.improvement_since_stage_start > 0,
        needs_attention=(not healthy) or m.isolation_violations > 0,
        annotations=annotations,
    )


def seed_telemetry(slot: SeedSlot, epoch: int, accuracy_delta: float) -> SeedTelemetry | None:
    """The per-seed snapshot of spec 6.4, or None for an empty slot."""
    if not slot.is_occupied:
        return None
    m, health = slot.metrics, slot.health
    return SeedTelemetry(
        seed_id=slot.seed_id,
        blueprint_id=slot.blueprint_id,
        layer_id=slot.slot_id,
        gradient_norm=health.norm,
        gradient_health=health.health,
        has_vanishing=health.has_vanishing,
        has_exploding=health.has_exploding,
        accuracy=m.current_val_accuracy,
        accuracy_delta=accuracy_delta,
        epochs_in_stage=m.epochs_in_current_stage,
        stage=slot.stage,
        alpha=m.current_alpha,
        epoch=epoch,
        max_epochs=slot.config.max_epochs,
    )


def field_report(
    slot: SeedSlot,
    *,
    success: bool,
    failure_reason: str = "",
    failure_stage: SeedStage = SeedStage.UNKNOWN,
) -> FieldReport:
    """The whole life of the slot's seed, taken the moment it fossilizes or is culled."""
    m = slot.metrics
    return FieldReport(
        seed_id=slot.seed_id,
        blueprint_id=slot.blueprint_id,
        slot_id=slot.slot_id,
        final_stage=slot.stage,
        success=success,
        germinated_at=slot.germinated_at,
        total_epochs=m.epochs_total,
        epochs_per_stage=dict(slot.epochs_per_stage),
        accuracy_at_germination=m.initial_val_accuracy,
        accuracy_at_completion=m.current_val_accuracy,
        total_improvement=m.total_improvement,
        best_accuracy_achieved=m.best_val_accuracy,
        signals_at_germination=slot.signals_at_germination,
        commands_received=list(slot.commands_received),
        failure_reason=failure_reason[:1024],
        failure_stage=failure_stage,
    )


def fossilized_payload(slot: SeedSlot) -> SeedFossilized:
    m = slot.metrics
    return SeedFossilized(
        seed_id=slot.seed_id,
        blueprint_id=slot.blueprint_id,
        improvement=m.total_improvement,
        params_added=0 if slot.seed is None else parameter_count(slot.seed),
        epochs_total=m.epochs_total,
        epochs_in_stage=slot.epochs_per_stage.get(SeedStage.PROBATIONARY.name, 0),
    )


def culled_payload(slot: SeedSlot, reason: str) -> SeedCulled:
    m = slot.metrics
    return SeedCulled(
        seed_id=slot.seed_id,
        blueprint_id=slot.blueprint_id,
        reason=reason[:1024],
        improvement=m.total_improvement,
        epochs_total=m.epochs_total,
        epochs_in_stage=m.epochs_in_current_stage,
    )
