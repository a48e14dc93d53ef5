"""A restless controller policy for fault runs: it acts on nearly every signal it sees.

The spec's heuristic waits out a warm-up and a plateau, so a short run issues few commands;
a fault run needs commands in flight when the faults land. This is an ordinary `MlpPolicy`
checkpoint whose WAIT logit is pushed far down, so the masked argmax picks a legal action
(germinate, fossilize or cull) whenever one exists.
"""

from __future__ import annotations

from pathlib import Path

import torch

from leyline import DEFAULT_BOUNDS
from services.controller.layout import ActionLayout
from services.controller.mlp import MlpPolicy

#: How far below every other action WAIT's logit sits.
_WAIT_PENALTY = 50.0


def write_restless_policy(path: Path, seed: int = 0, topology: str = "cnn") -> Path:
    """Save the restless policy to `path` (loadable with `--policy mlp --checkpoint`)."""
    generator = torch.Generator().manual_seed(seed)
    layout = ActionLayout(topology)
    policy = MlpPolicy(layout, DEFAULT_BOUNDS, hidden=16)
    last = policy.net[-1]
    assert isinstance(last, torch.nn.Linear)
    with torch.no_grad():
        last.bias.copy_(torch.rand(len(layout), generator=generator))
        last.bias[layout.wait] = -_WAIT_PENALTY
    path.parent.mkdir(parents=True, exist_ok=True)
    policy.save(path)
    return path
