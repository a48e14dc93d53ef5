"""The MLP policy: masked argmax, and a checkpoint that rebuilds it in a fresh process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from leyline.actions import DEFAULT_BLUEPRINTS, BlueprintCatalog, BlueprintSpec
from leyline.features import FeatureBounds
from services.controller import ActionLayout, MlpPolicy, ObservationBatch
from services.controller.columns import COLUMN_COUNT

BOUNDS = FeatureBounds(max_epochs=75, max_steps=50_000, loss_cap=12.0)


def _batch(features: torch.Tensor) -> ObservationBatch:
    return ObservationBatch(features, torch.zeros((features.shape[0], COLUMN_COUNT)))


def _random_masks(generator: torch.Generator, rows: int, actions: int) -> torch.Tensor:
    masks = torch.rand((rows, actions), generator=generator) < 0.4
    masks[:, 0] = True
    return masks


def test_never_chooses_a_masked_action(layout: ActionLayout) -> None:
    generator = torch.Generator().manual_seed(7)
    torch.manual_seed(7)
    policy = MlpPolicy(layout, BOUNDS).eval()
    features = torch.rand((512, 27), generator=generator) * 2 - 1
    masks = _random_masks(generator, 512, len(layout))
    with torch.inference_mode():
        out = policy(_batch(features), masks)
    assert masks.gather(1, out.actions.unsqueeze(1)).all()
    assert ((out.confidence > 0) & (out.confidence <= 1)).all()


def test_picks_the_best_legal_action_when_the_favourite_is_masked(layout: ActionLayout) -> None:
    policy = MlpPolicy(layout, BOUNDS).eval()
    last = policy.net[-1]
    assert isinstance(last, torch.nn.Linear)
    with torch.no_grad():
        last.weight.zero_()
        last.bias.copy_(torch.arange(len(layout), dtype=torch.float32))  # CULL scores highest
    masks = torch.ones((2, len(layout)), dtype=torch.bool)
    masks[0, layout.cull] = False
    with torch.inference_mode():
        actions = policy(_batch(torch.zeros(2, 27)), masks).actions.tolist()
    assert actions == [layout.fossilize, layout.cull]


def test_checkpoint_round_trips_weights_bounds_and_architecture(
    layout: ActionLayout, tmp_path: Path
) -> None:
    torch.manual_seed(3)
    policy = MlpPolicy(layout, BOUNDS, hidden=32).eval()
    path = tmp_path / "policy.pt"
    policy.save(path)
    loaded = MlpPolicy.load(path).eval()
    assert loaded.bounds == BOUNDS
    assert loaded.architecture == policy.architecture
    assert loaded.layout == layout
    features = torch.rand((16, 27)) * 2 - 1
    masks = torch.ones((16, len(layout)), dtype=torch.bool)
    with torch.inference_mode():
        assert torch.equal(
            policy(_batch(features), masks).actions, loaded(_batch(features), masks).actions
        )
        assert torch.equal(policy.net(features), loaded.net(features))


def test_checkpoint_loads_in_a_fresh_process(layout: ActionLayout, tmp_path: Path) -> None:
    torch.manual_seed(5)
    policy = MlpPolicy(layout, BOUNDS).eval()
    path = tmp_path / "policy.pt"
    policy.save(path)
    features = torch.linspace(-1, 1, 27).reshape(1, 27)
    script = (
        "import json, sys, torch\n"
        "from services.controller import MlpPolicy\n"
        "p = MlpPolicy.load(sys.argv[1]).eval()\n"
        "x = torch.linspace(-1, 1, 27).reshape(1, 27)\n"
        "print(json.dumps({'logits': p.net(x).tolist(), 'max_epochs': p.bounds.max_epochs}))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(path)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    loaded = json.loads(result.stdout)
    assert loaded["max_epochs"] == 75
    with torch.inference_mode():
        assert loaded["logits"] == policy.net(features).tolist()


def test_load_refuses_a_checkpoint_for_other_actions(layout: ActionLayout, tmp_path: Path) -> None:
    path = tmp_path / "policy.pt"
    MlpPolicy(layout, BOUNDS).save(path)
    extra = BlueprintSpec(name="wide", topology="cnn", param_estimate=9_000)
    catalog = BlueprintCatalog((*DEFAULT_BLUEPRINTS, extra))
    with pytest.raises(ValueError, match="do not match"):
        MlpPolicy.load(path, catalog)


def test_load_refuses_a_file_that_is_not_a_policy_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(3)}, path)
    with pytest.raises(ValueError, match=r"not a leyline\.mlp-policy\.v1 checkpoint"):
        MlpPolicy.load(path)
