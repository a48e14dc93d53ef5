"""The transformer topology: the text corpus, the causal host, its four seeds, a worker on it."""

from __future__ import annotations

import io

import pytest
import torch
from worker_helpers import command

from leyline import AckOutcome, CommandType, SeedStage
from leyline.actions import DEFAULT_CATALOG, SLOT_IDS
from services.worker import Trainer, WorkerModel
from services.worker.blueprints import blueprints, build_seed, parameter_count
from services.worker.config import TrainingConfig
from services.worker.data import DataSplit
from services.worker.data_text import ALPHABET, VOCAB_SIZE, corpus, decode, load_text_split
from services.worker.host_transformer import HostTransformer

WIDTH = 64
BLUEPRINTS = [spec.name for spec in DEFAULT_CATALOG.blueprints("transformer")]
TRANSFORMER = TrainingConfig(topology="transformer")


@pytest.fixture(scope="module")
def text() -> DataSplit:
    """A small split: enough windows to learn spelling in two epochs, fast on one core."""
    return load_text_split(seed=0, characters=6_000)


def test_the_corpus_is_generated_the_same_everywhere_from_its_alphabet() -> None:
    first = corpus(2_000)
    assert first == corpus(2_000) and len(first) >= 2_000
    assert set(first) <= set(ALPHABET)
    assert first != corpus(2_000, seed=1)
    # Number agreement: a plural determiner is never followed by a singular noun.
    assert "many cat " not in first and "some dog " not in first


def test_windows_predict_the_next_character_and_split_by_seed(text: DataSplit) -> None:
    assert text.train_x.shape[1] == TRANSFORMER.context == text.train_y.shape[1]
    assert text.train_x.dtype == torch.int64
    # Each target window is its input window shifted by one character.
    assert decode(text.train_x[0][1:]) == decode(text.train_y[0][:-1])
    total = len(text.train_x) + len(text.val_x)
    assert len(text.val_x) == round(total * 0.2)
    other = load_text_split(seed=1, characters=6_000)
    assert not torch.equal(other.val_x, text.val_x)
    assert torch.equal(load_text_split(seed=0, characters=6_000).val_x, text.val_x)


def test_the_host_has_the_spec_slots_and_maps_tokens_to_next_token_logits() -> None:
    host = HostTransformer(WIDTH)
    assert tuple(host.slots) == SLOT_IDS["transformer"]
    tokens = torch.randint(0, VOCAB_SIZE, (3, 32))
    assert host(tokens).shape == (3, 32, VOCAB_SIZE)
    seeds = {id(p) for slot in host.slots.values() for p in slot.parameters()}
    assert not seeds & {id(p) for p in host.host_parameters()}


def test_the_host_is_causal_even_with_an_attention_seed_in_a_slot() -> None:
    seed = build_seed("attention", WIDTH, "transformer")
    for p in seed.parameters():
        torch.nn.init.normal_(p, std=0.2)  # a trained seed, not the zero-output newborn
    host = HostTransformer(WIDTH, slots={"layer_2_post_block": seed}).eval()
    tokens = torch.randint(0, VOCAB_SIZE, (1, 32))
    changed = tokens.clone()
    changed[0, 20] = (tokens[0, 20] + 1) % VOCAB_SIZE
    with torch.no_grad():
        before, after = host(tokens), host(changed)
    assert torch.equal(before[0, :20], after[0, :20])
    assert not torch.equal(before[0, 20:], after[0, 20:])


def test_the_four_seeds_are_the_catalogue_s_and_ascend_by_parameters_like_it() -> None:
    expected = {"norm", "lora", "attention", "mlp"}
    registered = [b.name for b in blueprints("transformer")]
    assert registered == BLUEPRINTS and set(BLUEPRINTS) == expected
    counts = [parameter_count(build_seed(name, WIDTH, "transformer")) for name in BLUEPRINTS]
    assert counts == sorted(counts) and len(set(counts)) == 4
    assert counts[1] == 2 * WIDTH * 8  # lora: rank 8, down and up


@pytest.mark.parametrize("blueprint", BLUEPRINTS)
def test_every_seed_keeps_shape_starts_as_the_identity_and_learns(blueprint: str) -> None:
    seed = build_seed(blueprint, WIDTH, "transformer")
    x = torch.randn(2, 7, WIDTH)
    out = seed(x)
    assert out.shape == x.shape
    assert torch.equal(out, x)  # blending a newborn seed at any alpha changes nothing
    out.square().sum().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in seed.parameters())


def test_a_transformer_worker_grows_every_blueprint_and_refuses_a_cnn_one() -> None:
    model = WorkerModel("w1", TRANSFORMER)
    for slot_id, blueprint in zip(SLOT_IDS["transformer"], BLUEPRINTS, strict=False):
        outcome = model.apply_command(
            command(CommandType.GERMINATE, blueprint_id=blueprint, target_slot_id=slot_id)
        )
        assert outcome.outcome is AckOutcome.APPLIED, outcome.detail
        assert model.slots[slot_id].stage is SeedStage.GERMINATED
    refused = model.apply_command(
        command(
            CommandType.GERMINATE, blueprint_id="conv_enhance", target_slot_id="layer_5_post_block"
        )
    )
    assert refused.outcome is AckOutcome.REJECTED
    assert refused.reason == "unknown_blueprint"
    assert "no transformer blueprint 'conv_enhance'" in refused.detail


def test_training_raises_next_token_accuracy_and_seeds_survive_a_checkpoint(
    text: DataSplit,
) -> None:
    model = WorkerModel("w1", TRANSFORMER)
    trainer = Trainer(model, text)
    germinate = command(
        CommandType.GERMINATE, blueprint_id="lora", target_slot_id="layer_0_post_block"
    )
    assert model.apply_command(germinate).applied
    first = trainer.tick().metrics
    second = trainer.tick().metrics
    # The most common character (space) alone is about 18% of the text.
    assert second.val_accuracy > 25.0 and second.val_loss < first.val_loss
    assert model.slots["layer_0_post_block"].stage is SeedStage.TRAINING

    saved = io.BytesIO()
    torch.save(trainer.state_dict(), saved)  # as the worker's checkpoint file does
    saved.seek(0)
    restored = Trainer(WorkerModel("w1", TRANSFORMER), text)
    restored.load_state_dict(torch.load(saved, weights_only=True))
    assert restored.model.slots["layer_0_post_block"].blueprint_id == "lora"
    assert trainer.tick().metrics.val_loss == restored.tick().metrics.val_loss
