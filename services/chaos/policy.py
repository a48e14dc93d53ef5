"""A restless controller policy for fault runs: it acts on nearly every signal it sees.

The spec's heuristic waits out a warm-up and a plateau, so a short run issues few commands;
a fault run needs commands in flight when the faults land. This is an ordinary `MlpPolicy`
checkpoint whose output ignores the features: WAIT's logit is far down and CULL's is above
FOSSILIZE's, so the masked argmax germinates an empty slot and culls a live seed at once,
and slots keep cycling instead of filling up with fossils.
"""

from __future__ import annotations

from pathlib import Path

import torch

from leyline.features import DEFAULT_BOUNDS
from services.controller.layout import ActionLayout
from services.controller.mlp import MlpPolicy

#: Logits by action kind; germinations get these plus a seeded jitter in [0, 1).
_WAIT, _FOSSILIZE, _CULL, _GERMINATE = -50.0, 0.0, 1.0, 2.0


def write_restless_policy(path: Path, seed: int = 0, topology: str = "cnn") -> Path:
    """Save the restless policy to `path` (loadable with `--policy mlp --checkpoint`)."""
    generator = torch.Generator().manual_seed(seed)
    layout = ActionLayout(topology)
    policy = MlpPolicy(layout, DEFAULT_BOUNDS, hidden=16)
    last = policy.net[-1]
    assert isinstance(last, torch.nn.Linear)
    with torch.no_grad():
        last.weight.zero_()
        last.bias.copy_(_GERMINATE + torch.rand(len(layout), generator=generator))
        last.bias[layout.wait] = _WAIT
        last.bias[layout.fossilize] = _FOSSILIZE
        last.bias[layout.cull] = _CULL
    path.parent.mkdir(parents=True, exist_ok=True)
    policy.save(path)
    return path
