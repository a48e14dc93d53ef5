"""A seed slot: isolation, blending inside the host, auto-advance, cull cool-off and reuse."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from worker_helpers import germinate

from leyline import SeedStage, TelemetryEventType
from services.worker import HostCNN, SeedSlot, WorkerModel
from services.worker.config import LifecycleConfig
from services.worker.records import state_report

S = SeedStage


def _stage_changes(events: list) -> list[tuple[SeedStage, SeedStage]]:  # type: ignore[type-arg]
    return [
        (e.payload.from_stage, e.payload.to_stage)
        for e in events
        if e.event_type is TelemetryEventType.SEED_STAGE_CHANGED
    ]


def _host_grads(host: HostCNN) -> list[torch.Tensor]:
    return [p.grad.clone() for p in host.host_parameters()]  # type: ignore[union-attr]


def test_training_forward_equals_host_while_only_the_seed_learns_through_the_slot(
    model: WorkerModel,
) -> None:
    slot = model.slots["block2_post"]
    germinate(slot, nn.Conv2d(32, 32, 3, padding=1))
    model.begin_epoch(1)
    assert slot.stage is S.TRAINING
    torch.manual_seed(0)
    reference = HostCNN()  # same seed as the worker's host: identical weights
    x, y = torch.rand(16, 1, 8, 8), torch.randint(0, 10, (16,))
    model.host.train()
    out = model.host(x)
    expected = reference(x)
    assert torch.equal(out, expected)
    F.cross_entropy(out, y).backward()  # type: ignore[no-untyped-call]
    F.cross_entropy(expected, y).backward()  # type: ignore[no-untyped-call]
    for got, want in zip(_host_grads(model.host), _host_grads(reference), strict=True):
        assert torch.allclose(got, want, atol=1e-7)
    seed_grads = [p.grad for p in slot.seed_parameters()]
    assert all(g is not None and float(g.abs().sum()) > 0 for g in seed_grads)
    assert slot.metrics.isolation_violations == 0


def test_blending_mixes_the_seed_in_while_the_host_learns_only_through_its_own_path(
    slot: SeedSlot,
) -> None:
    germinate(slot)
    slot._move(S.TRAINING, 1)
    slot._move(S.BLENDING, 1)
    slot.set_alpha(0.25)
    assert slot.seed is not None
    host = torch.randn(2, 4, 8, 8, requires_grad=True)
    out = slot(host)
    expected = host + 0.25 * (slot.seed(host) - host)
    assert torch.allclose(out, expected, atol=1e-6)
    out.sum().backward()
    assert host.grad is not None and torch.allclose(host.grad, torch.full_like(host, 0.75))


class _LeakySeed(nn.Module):
    """A seed that reuses a host parameter, so training it would train the host too."""

    def __init__(self, shared: nn.Parameter) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))
        self.shared = [shared]  # a plain list: not registered as the seed's own parameter

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale * self.shared[0]


def test_a_seed_path_that_reaches_host_parameters_counts_isolation_violations() -> None:
    from leyline import LifecycleGuard

    host_weight = nn.Parameter(torch.ones(()))
    slot = SeedSlot("block2_post", 4, worker_id="w1", guard=LifecycleGuard(),
                    host_parameter_ids=frozenset({id(host_weight)}))  # fmt: skip
    germinate(slot, _LeakySeed(host_weight))
    slot.begin_epoch(1)
    slot.train()
    for _ in range(3):
        slot(torch.randn(2, 4, 8, 8)).sum().backward()
    assert slot.metrics.isolation_violations == 3
    assert host_weight.grad is not None  # the leak is real, not only counted
    slot.eval()
    slot(torch.randn(2, 4, 8, 8))
    assert slot.metrics.isolation_violations == 3  # validation passes are not training
    change = slot.end_epoch(1, 60.0)
    kinds = [e.event_type for e in change.events]
    assert TelemetryEventType.ISOLATION_VIOLATION in kinds


def test_too_many_violations_keep_the_seed_out_of_blending(slot: SeedSlot) -> None:
    germinate(slot)
    slot.begin_epoch(1)
    slot.metrics.isolation_violations = 11
    for epoch in range(1, 6):
        slot.end_epoch(epoch, 60.0 + epoch)
    assert slot.stage is S.TRAINING
    assert slot.last_gate is not None and slot.last_gate.checks_failed == ["isolation"]


def test_auto_advance_walks_germinated_to_probationary_and_stops(slot: SeedSlot) -> None:
    germinate(slot, baseline=50.0)
    seen: list[tuple[SeedStage, float]] = []
    changes = []
    for epoch in range(1, 15):
        changes += slot.begin_epoch(epoch).events
        changes += slot.end_epoch(epoch, 50.0 + epoch).events
        seen.append((slot.stage, round(slot.alpha, 2)))
        assert slot.guard.stage("w1", "block2_post") is slot.stage
    assert [stage for stage, _ in seen] == (
        [S.TRAINING] * 2 + [S.BLENDING] * 5 + [S.SHADOWING] * 2 + [S.PROBATIONARY] * 5
    )
    assert [alpha for _, alpha in seen[2:9]] == [0.0, 0.18, 0.38, 0.62, 0.82, 1.0, 1.0]
    assert _stage_changes(changes) == [
        (S.GERMINATED, S.TRAINING),
        (S.TRAINING, S.BLENDING),
        (S.BLENDING, S.SHADOWING),
        (S.SHADOWING, S.PROBATIONARY),
    ]
    assert slot.metrics.epochs_total == 14
    assert slot.metrics.total_improvement == 14.0


def test_without_improvement_the_seed_stays_in_training(slot: SeedSlot) -> None:
    germinate(slot, baseline=70.0)
    for epoch in range(1, 8):
        slot.begin_epoch(epoch)
        slot.end_epoch(epoch, 70.2)
    assert slot.stage is S.TRAINING
    assert slot.last_gate is not None and "improvement" in slot.last_gate.checks_failed


def test_a_pinned_alpha_holds_until_the_ramp_ends(slot: SeedSlot) -> None:
    germinate(slot)
    slot._move(S.TRAINING, 0)
    slot._move(S.BLENDING, 0)
    slot.set_alpha(1.7)
    assert slot.alpha == 1.0
    slot.set_alpha(0.3)
    for epoch in range(1, 5):
        slot.begin_epoch(epoch)
        slot.end_epoch(epoch, 60.0)
        assert slot.alpha == 0.3
    slot.begin_epoch(5)
    slot.end_epoch(5, 60.0)
    assert slot.stage is S.SHADOWING and slot.alpha == 1.0 and not slot.alpha_pinned


def test_a_paused_seed_stops_its_stage_clock(slot: SeedSlot) -> None:
    germinate(slot)
    slot.begin_epoch(1)
    slot.end_epoch(1, 60.0)
    slot.pause()
    assert slot.seed is not None
    assert not any(p.requires_grad for p in slot.seed.parameters())
    for epoch in range(2, 8):
        slot.begin_epoch(epoch)
        slot.end_epoch(epoch, 60.0 + epoch)
    assert slot.stage is S.TRAINING
    assert slot.metrics.epochs_in_current_stage == 1
    assert slot.metrics.epochs_total == 7
    slot.resume()
    assert all(p.requires_grad for p in slot.seed.parameters())
    slot.begin_epoch(8)
    slot.end_epoch(8, 70.0)
    slot.begin_epoch(9)
    slot.end_epoch(9, 70.0)
    assert state_report(slot).stage is S.BLENDING


def test_culled_slot_cools_off_resets_and_is_free_again(slot: SeedSlot) -> None:
    germinate(slot)
    slot.begin_epoch(1)
    seed_params = slot.seed_parameters()
    change = slot.cull("no gain", epoch=1)
    assert slot.stage is S.CULLED
    assert change.field_report is not None and not change.field_report.success
    assert change.field_report.failure_stage is S.TRAINING
    assert change.field_report.failure_reason == "no gain"
    stages, released = [], []
    for epoch in range(2, 8):
        tick = slot.end_epoch(epoch, 60.0)
        stages.append(slot.stage)
        released += tick.released
    assert stages == [S.EMBARGOED, S.EMBARGOED, S.EMBARGOED, S.RESETTING, S.DORMANT, S.DORMANT]
    assert released == seed_params
    assert slot.seed is None and slot.seed_id == "" and not slot.is_occupied
    assert slot.guard.stage("w1", "block2_post") is S.DORMANT
    germinate(slot)


def test_embargo_length_is_configurable() -> None:

    slot = SeedSlot("s", 4, worker_id="w1", config=LifecycleConfig(embargo_epochs=1))
    germinate(slot)
    slot.cull("test", epoch=0)
    stages = []
    for epoch in range(1, 5):
        slot.end_epoch(epoch, 0.0)
        stages.append(slot.stage)
    assert stages == [S.EMBARGOED, S.RESETTING, S.DORMANT, S.DORMANT]
