"""Your own policy: loaded by import path or from a checkpoint, it makes the loop's decisions."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from controller_signals import make_signal
from own_policies import LastLegal, Scores, TooWide

from leyline import SeedStage
from services.config import ConfigError, ControllerConfig, load_config
from services.controller import (
    ActionLayout,
    DecisionReason,
    HeuristicPolicy,
    InferenceLoop,
    ModulePolicy,
    PolicyError,
    load_policy,
)

S = SeedStage
TOPOLOGY = "transformer"
SLOTS = ("layer_0_post_block", "layer_1_post_block", "layer_2_post_block")


def _decide(loop: InferenceLoop) -> dict[str, str]:
    """One observation per slot: empty with room, training, probationary; slot -> action."""
    stages = (S.DORMANT, S.TRAINING, S.PROBATIONARY)
    for slot, stage in zip(SLOTS, stages, strict=True):
        loop.submit("w1", slot, make_signal(epoch=9, seed_stage=stage, available_slots=1), 0.0)
    return {d.slot_id: d.action.name for d in loop.flush()}


DEVICES = [
    "cpu",
    pytest.param(
        "cuda",
        marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
    ),
]


@pytest.mark.parametrize("device", DEVICES)
def test_a_policy_by_import_path_makes_the_loops_decisions(device: str) -> None:
    policy = load_policy("own_policies:LastLegal", TOPOLOGY)
    assert isinstance(policy, ModulePolicy) and isinstance(policy.module, LastLegal)
    loop = InferenceLoop(policy, device=device)
    # The last legal action: the largest blueprint when empty, CULL for a live seed.
    assert _decide(loop) == {
        "layer_0_post_block": "GERMINATE_MLP",
        "layer_1_post_block": "CULL",
        "layer_2_post_block": "CULL",
    }
    loop.submit("w1", SLOTS[0], make_signal(epoch=10), 0.0)
    [decision] = loop.flush()
    assert decision.reason is DecisionReason.LEARNED and decision.confidence == 1.0
    assert decision.command is not None and decision.command.blueprint_id == "mlp"


def test_scores_become_the_legal_argmax_and_a_checkpoint_sets_them(tmp_path: Path) -> None:
    layout = ActionLayout(TOPOLOGY)
    trained = Scores(layout)
    with torch.no_grad():
        trained.bias[layout.germinate["lora"]] = 5.0  # prefers lora, then fossilizing
        trained.bias[layout.fossilize] = 4.0
    weights = tmp_path / "scores.pt"
    torch.save(trained.state_dict(), weights)

    untrained = InferenceLoop(load_policy("own_policies:Scores", TOPOLOGY), device="cpu")
    assert set(_decide(untrained).values()) == {"WAIT"}  # all zero: the first legal action
    loop = InferenceLoop(load_policy("own_policies:Scores", TOPOLOGY, str(weights)), device="cpu")
    assert _decide(loop) == {
        "layer_0_post_block": "GERMINATE_LORA",
        "layer_1_post_block": "WAIT",  # FOSSILIZE and GERMINATE are illegal while training
        "layer_2_post_block": "FOSSILIZE",
    }


def test_a_whole_saved_module_loads_as_policy_module(tmp_path: Path) -> None:
    saved = tmp_path / "policy.pt"
    torch.save(LastLegal(ActionLayout(TOPOLOGY)), saved)
    loop = InferenceLoop(load_policy("module", TOPOLOGY, str(saved)), device="cpu")
    assert _decide(loop)["layer_0_post_block"] == "GERMINATE_MLP"


def test_the_built_in_policies_load_by_import_path_too() -> None:
    policy = load_policy("services.controller.heuristic:HeuristicPolicy", TOPOLOGY)
    assert type(policy) is HeuristicPolicy and policy.layout == ActionLayout(TOPOLOGY)
    assert isinstance(load_policy("heuristic", TOPOLOGY), HeuristicPolicy)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("nowhere.near:make", "policy 'nowhere.near:make': cannot import nowhere.near"),
        ("own_policies:missing", "policy 'own_policies:missing': own_policies has no missing"),
        ("own_policies:NOT_CALLABLE", "policy 'own_policies:NOT_CALLABLE' is a int, not a"),
        ("own_policies:make_number", "policy 'own_policies:make_number' built a int, not an"),
        (
            "own_policies:TooWide",
            "policy 'own_policies:TooWide' returned float32 tensor [2, 8]; expected actions "
            "(an integer tensor [2]) or scores (a float tensor [2, 7])",
        ),
        (
            "own_policies:OutOfRange",
            "policy 'own_policies:OutOfRange' proposed actions outside 0..6",
        ),
        (
            "own_policies:make_cnn_heuristic",
            "policy 'own_policies:make_cnn_heuristic' decides ('WAIT', 'GERMINATE_NORM', "
            "'GERMINATE_ATTENTION'",
        ),
    ],
)
def test_a_bad_policy_is_one_line_naming_it(name: str, message: str) -> None:
    with pytest.raises(PolicyError) as raised:
        load_policy(name, TOPOLOGY)
    text = str(raised.value)
    assert text.startswith(message) and "\n" not in text


def test_a_checkpoint_that_does_not_fit_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="needs a checkpoint file"):
        load_policy("module", TOPOLOGY)
    with pytest.raises(PolicyError, match="no checkpoint file"):
        load_policy("own_policies:Scores", TOPOLOGY, str(tmp_path / "absent.pt"))
    wrong = tmp_path / "wrong.pt"
    torch.save({"weight": torch.zeros(3)}, wrong)
    with pytest.raises(PolicyError, match=r"cannot load .* as its state_dict"):
        load_policy("own_policies:Scores", TOPOLOGY, str(wrong))


def test_a_policy_shape_wrong_after_the_first_batch_is_still_named() -> None:
    policy = load_policy("own_policies:Scores", TOPOLOGY)
    assert isinstance(policy, ModulePolicy)
    policy.module = TooWide(policy.layout)  # a policy that changes its answer mid-run
    loop = InferenceLoop(policy, device="cpu")
    loop.submit("w1", SLOTS[0], make_signal(epoch=9), 0.0)
    with pytest.raises(PolicyError, match="policy 'own_policies:Scores' returned float32"):
        loop.flush()


def test_the_config_takes_an_import_path_and_refuses_anything_else() -> None:
    env = {"LEYLINE_CONTROLLER_POLICY": "my_lab.policies:make_policy"}
    config = load_config(ControllerConfig, "controller", env=env)
    assert config.policy == "my_lab.policies:make_policy"
    with pytest.raises(ConfigError, match=r"controller\.policy = my policy"):
        load_config(ControllerConfig, "controller", env={"LEYLINE_CONTROLLER_POLICY": "my policy"})


def test_the_controller_command_refuses_a_bad_policy_in_one_line(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            *(sys.executable, "-m", "services.cli", "controller", "--insecure"),
            *("--policy", "nowhere.near:make", "--journal", str(tmp_path / "journal.db")),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "leyline controller: policy 'nowhere.near:make': cannot import nowhere.near: "
        "No module named 'nowhere'"
    ]
