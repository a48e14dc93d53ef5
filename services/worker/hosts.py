"""The host families a worker can train, by topology: the network, its slots, probe and data."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from services.worker.config import TrainingConfig
from services.worker.data import DataSplit, load_digits_split
from services.worker.data_text import load_text_split
from services.worker.host import HostCNN
from services.worker.host_transformer import HostTransformer

Host = HostCNN | HostTransformer


@dataclass(frozen=True)
class HostFamily:
    """What the worker needs of one topology; `probe(width)` is the zero tensor every new seed
    on `width`-wide features must map to its own shape (spec 8: 1 x C x 8 x 8 or 2 x 4 x C)."""

    topology: str
    build: Callable[[TrainingConfig], Host]
    slot_widths: Callable[[TrainingConfig], dict[str, int]]
    probe: Callable[[int], torch.Tensor]
    load_data: Callable[[TrainingConfig], DataSplit]


FAMILIES: dict[str, HostFamily] = {
    "cnn": HostFamily(
        topology="cnn",
        build=lambda t: HostCNN(t.channels),
        slot_widths=lambda t: HostCNN.slot_channels(t.channels),
        probe=lambda width: torch.zeros(1, width, 8, 8),
        load_data=lambda t: load_digits_split(t.seed, t.val_fraction),
    ),
    "transformer": HostFamily(
        topology="transformer",
        build=lambda t: HostTransformer(t.width, t.context),
        slot_widths=lambda t: HostTransformer.slot_widths(t.width),
        probe=lambda width: torch.zeros(2, 4, width),
        load_data=lambda t: load_text_split(t.seed, t.val_fraction, t.context),
    ),
}


def host_family(topology: str) -> HostFamily:
    """The family of `topology`; a clear error naming the known ones otherwise."""
    try:
        return FAMILIES[topology]
    except KeyError:
        raise ValueError(
            f"no host for topology {topology!r} (known: {', '.join(FAMILIES)})"
        ) from None
