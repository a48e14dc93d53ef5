"""The worker library on a user's own module: slots on any shape, their own blueprints,
seeds reaching the user's optimiser, and checkpoints that resume exactly."""

from __future__ import annotations

import io
from collections.abc import Iterator

import pytest
import torch
from torch import nn

from leyline import AckOutcome, AdaptationCommand, CommandType, SeedStage, new_id
from leyline.actions import DEFAULT_CATALOG
from services.worker import (
    EpochClock,
    Seeds,
    SeedSlot,
    TrainingState,
    probe_shape,
    register_blueprint,
    register_topology,
    unregister_blueprint,
)

TOPOLOGY = "sequence_test"


class ScaleSeed(nn.Module):
    """A per-feature scale on the last axis: keeps (B, T, D) and (B, D) alike."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale


class Shrinker(nn.Module):
    """A seed that breaks the rule: it drops the last feature."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.width = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[..., : self.width - 1]


class SequenceNet(nn.Module):
    """A user's own model: embeddings (B, T, D), a slot there, pooling, a slot on (B, D)."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(16, 8)
        self.mixer = nn.Linear(8, 8)
        self.tokens_post = SeedSlot("tokens_post", 8)
        self.pooled_post = SeedSlot("pooled_post", 8)
        self.head = nn.Linear(8, 2)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.tokens_post(torch.relu(self.mixer(self.embed(tokens))))
        out: torch.Tensor = self.head(self.pooled_post(x.mean(dim=1)))
        return out


@pytest.fixture(autouse=True)
def sequence_blueprints() -> Iterator[None]:
    register_topology(TOPOLOGY, lambda width: (2, 4, width))
    register_blueprint(TOPOLOGY, "scale", ScaleSeed, 8, description="per-feature scale")
    register_blueprint(TOPOLOGY, "shrink", Shrinker, 0)
    yield
    unregister_blueprint(TOPOLOGY, "scale")
    unregister_blueprint(TOPOLOGY, "shrink")


def _command(kind: CommandType, **fields: object) -> AdaptationCommand:
    return AdaptationCommand(command_id=new_id(), command_type=kind, **fields)  # type: ignore[arg-type]


def _run_epoch(net: SequenceNet, optimizer: torch.optim.Optimizer, clock: EpochClock) -> None:
    generator = torch.Generator().manual_seed(clock.global_step)
    tokens = torch.randint(0, 16, (4, 5), generator=generator)
    labels = torch.randint(0, 2, (4,), generator=generator)
    for _ in range(3):
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(net(tokens), labels)
        loss.backward()  # type: ignore[no-untyped-call]
        clock.record_step()
        optimizer.step()
    clock.end(train_loss=loss.item(), val_loss=loss.item(), val_accuracy=50.0)


def test_registered_blueprints_join_the_catalogue_in_estimate_order() -> None:
    names = [spec.name for spec in DEFAULT_CATALOG.blueprints(TOPOLOGY)]
    assert names == ["shrink", "scale"]
    assert probe_shape(TOPOLOGY, 8) == (2, 4, 8)


def test_a_seed_germinated_in_a_users_module_trains_through_their_optimiser() -> None:
    net = SequenceNet()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    seeds = Seeds("w1", net, topology=TOPOLOGY, optimizer=optimizer, seed_learning_rate=0.05)
    clock = EpochClock(seeds)
    assert list(seeds.slots) == ["tokens_post", "pooled_post"]

    outcome = seeds.apply_command(
        _command(CommandType.GERMINATE, blueprint_id="scale", target_slot_id="tokens_post")
    )
    assert outcome.outcome is AckOutcome.APPLIED
    seed = net.tokens_post.seed
    assert isinstance(seed, ScaleSeed)
    groups = [g for g in optimizer.param_groups if g.get("slot_id") == "tokens_post"]
    assert len(groups) == 1 and groups[0]["lr"] == 0.05
    assert groups[0]["params"] == [seed.scale]

    before = seed.scale.detach().clone()
    _run_epoch(net, optimizer, clock)  # GERMINATED -> TRAINING at the epoch's first step
    _run_epoch(net, optimizer, clock)
    assert net.tokens_post.stage in (SeedStage.TRAINING, SeedStage.BLENDING)
    assert not torch.equal(seed.scale.detach(), before)  # the user's optimiser trained it


def test_a_seed_that_changes_the_shape_is_refused() -> None:
    net = SequenceNet()
    seeds = Seeds("w1", net, topology=TOPOLOGY)
    outcome = seeds.apply_command(
        _command(CommandType.GERMINATE, blueprint_id="shrink", target_slot_id="pooled_post")
    )
    assert (outcome.outcome, outcome.reason) == (AckOutcome.REJECTED, "shape_mismatch")
    assert net.pooled_post.seed is None


def test_the_topologys_slot_ids_name_the_users_slots_by_position() -> None:
    """The stock controller names slots by SLOT_IDS["cnn"]: block2_post is the first slot."""
    net = SequenceNet()
    register_blueprint("cnn", "scale_test", ScaleSeed, 8)  # also keeps a 1 x 8 x 8 x 8 probe
    try:
        seeds = Seeds("w1", net, topology="cnn")
        outcome = seeds.apply_command(
            _command(CommandType.GERMINATE, blueprint_id="scale_test", target_slot_id="block3_post")
        )
    finally:
        unregister_blueprint("cnn", "scale_test")
    assert outcome.outcome is AckOutcome.APPLIED
    assert outcome.slot_id == "pooled_post" and net.pooled_post.seed is not None


def test_training_state_round_trip_rebuilds_seeds_weights_and_optimiser() -> None:
    net = SequenceNet()
    optimizer = torch.optim.Adam(net.parameters(), lr=0.01)
    seeds = Seeds("w1", net, topology=TOPOLOGY, optimizer=optimizer)
    clock = EpochClock(seeds)
    seeds.apply_command(
        _command(CommandType.GERMINATE, blueprint_id="scale", target_slot_id="pooled_post")
    )
    _run_epoch(net, optimizer, clock)
    buffer = io.BytesIO()
    torch.save(TrainingState(seeds, clock).state_dict(), buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)

    other = SequenceNet()
    other_optimizer = torch.optim.Adam(other.parameters(), lr=0.01)
    other_seeds = Seeds("w1", other, topology=TOPOLOGY, optimizer=other_optimizer)
    other_clock = EpochClock(other_seeds)
    TrainingState(other_seeds, other_clock).load_state_dict(saved)

    assert other.pooled_post.stage is net.pooled_post.stage
    for (name, mine), (_, theirs) in zip(
        net.state_dict().items(), other.state_dict().items(), strict=True
    ):
        assert torch.equal(mine, theirs), name
    _run_epoch(net, optimizer, clock)
    _run_epoch(other, other_optimizer, other_clock)
    for mine, theirs in zip(net.parameters(), other.parameters(), strict=True):
        assert torch.equal(mine, theirs)  # optimiser state came back too: identical steps
