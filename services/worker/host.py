"""The host network: a small three-block CNN for 8x8 images, seed slots after blocks 2 and 3."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import ClassVar

import torch
from torch import nn

from leyline.actions import SLOT_IDS
from services.worker.data import NUM_CLASSES


def _block(in_channels: int, out_channels: int, pool: bool) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(in_channels, out_channels, 3, padding=1), nn.ReLU()]
    if pool:
        layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers)


class HostCNN(nn.Module):
    """Three conv blocks (8x8 -> 8x8 -> 4x4 -> 2x2), global pooling and a linear classifier.

    `slots` maps each id in `slot_ids` to a module applied to that block's output; any id left
    out is the identity. Seeds live inside the slots, so `host_parameters()` excludes them.
    """

    #: The injection points, in forward order: after every block but the first.
    slot_ids: ClassVar[tuple[str, ...]] = SLOT_IDS["cnn"]

    def __init__(
        self,
        channels: tuple[int, int, int] = (16, 32, 64),
        slots: Mapping[str, nn.Module] | None = None,
    ) -> None:
        super().__init__()
        c1, c2, c3 = channels
        self.blocks = nn.ModuleList(
            [_block(1, c1, pool=False), _block(c1, c2, pool=True), _block(c2, c3, pool=True)]
        )
        self.head = nn.Linear(c3, NUM_CLASSES)
        given = dict(slots or {})
        unknown = set(given) - set(self.slot_ids)
        if unknown:
            raise ValueError(f"unknown slot ids {sorted(unknown)}; the host has {self.slot_ids}")
        self.slots = nn.ModuleDict({sid: given.get(sid, nn.Identity()) for sid in self.slot_ids})

    @staticmethod
    def slot_channels(channels: tuple[int, int, int] = (16, 32, 64)) -> dict[str, int]:
        """The feature width at each slot, for building slots before the host."""
        return {"block2_post": channels[1], "block3_post": channels[2]}

    def host_parameters(self) -> Iterator[nn.Parameter]:
        """The host's own parameters: blocks and head, never a seed's."""
        yield from self.blocks.parameters()
        yield from self.head.parameters()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks[0](x)
        x = self.slots["block2_post"](self.blocks[1](x))
        x = self.slots["block3_post"](self.blocks[2](x))
        logits: torch.Tensor = self.head(x.mean(dim=(2, 3)))
        return logits
