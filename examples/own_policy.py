"""Your own controller policy: a plain `nn.Module` from (features, masks) to action scores.

Run it with the stack:

    leyline up --policy examples.own_policy:make_policy
    leyline up --topology transformer --policy examples.own_policy:make_policy

The controller calls `make_policy(layout)` with the topology's `ActionLayout` (which index is
WAIT, FOSSILIZE, CULL and each GERMINATE_<blueprint>) and then, per micro-batch,
`module(features, masks)`: `features` is [B, TENSOR_SCHEMA_SIZE] float32, one normalised
observation per (worker, slot); `masks` is [B, A] bool, True where the action is legal now.
Return scores [B, A] (float: the legal argmax is chosen) or actions [B] (integer indices).
Weights trained elsewhere load with `--checkpoint weights.pt` (a state_dict of this module).

`python -m examples.own_policy` (from the repository root) shows the policy deciding three
observations through the controller's own inference loop, and saves its state_dict for
`--checkpoint`.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn

from leyline import FastTrainingSignals, SeedStage
from leyline.signals import TENSOR_SCHEMA_SIZE
from services.controller import ActionLayout, InferenceLoop, ModulePolicy, load_policy


class EagerGrower(nn.Module):
    """Grows the cheapest blueprint into every free slot, keeps every seed that reaches
    probation, never culls; a linear term over the features (zero until trained) can learn
    to overrule those preferences."""

    def __init__(self, layout: ActionLayout) -> None:
        super().__init__()
        preference = torch.full((len(layout),), -1.0)
        preference[layout.wait] = 0.0
        cheapest = min(layout.germinate.values())  # GERMINATE actions ascend by parameters
        preference[cheapest] = 1.0
        preference[layout.fossilize] = 2.0
        self.preference: torch.Tensor
        self.register_buffer("preference", preference)
        self.learned = nn.Linear(TENSOR_SCHEMA_SIZE, len(layout))
        nn.init.zeros_(self.learned.weight)
        nn.init.zeros_(self.learned.bias)

    def forward(self, features: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        scores: torch.Tensor = self.preference + self.learned(features)
        return scores


def make_policy(layout: ActionLayout) -> EagerGrower:
    """What `--policy examples.own_policy:make_policy` calls."""
    return EagerGrower(layout)


def main() -> int:
    """Decide an empty slot, a probationary seed and a training seed; save the weights."""
    policy = load_policy("examples.own_policy:make_policy", "transformer")
    loop = InferenceLoop(policy, device="cpu")
    stages = {"layer_0_post_block": SeedStage.DORMANT, "layer_1_post_block": SeedStage.PROBATIONARY,
              "layer_2_post_block": SeedStage.TRAINING}  # fmt: skip
    for slot, stage in stages.items():
        live = stage is not SeedStage.DORMANT
        signal = FastTrainingSignals.empty().with_values(
            epoch=6,
            seed_stage=stage,
            has_active_seed=int(live),
            available_slots=1,
        )
        loop.submit("w1", slot, signal, now=0.0)
    decided = {d.slot_id: d.action.name for d in loop.flush()}
    for slot, action in decided.items():
        print(f"{slot}: {action}")
    # Grow the cheapest seed, keep the probationary one, let the training one train.
    expected = dict(zip(stages, ["GERMINATE_NORM", "FOSSILIZE", "WAIT"], strict=True))
    if decided != expected:
        print(f"expected {expected}", file=sys.stderr)
        return 1
    weights = Path(sys.argv[1] if len(sys.argv) > 1 else "own_policy.pt")
    assert isinstance(policy, ModulePolicy)  # a plain module, so the loader wrapped it
    torch.save(policy.module.state_dict(), weights)
    print(f"saved {weights}: use --policy examples.own_policy:make_policy --checkpoint {weights}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
