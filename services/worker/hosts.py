"""The host families the built-in worker trains, by topology: the network, its slots, its data.

Importing this module registers the transformer's blueprints (`blueprints_transformer`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from services.worker import blueprints_transformer
from services.worker.config import TrainingConfig
from services.worker.data import DataSplit, load_digits_split
from services.worker.data_text import load_text_split
from services.worker.host import HostCNN
from services.worker.host_transformer import HostTransformer

Host = HostCNN | HostTransformer


@dataclass(frozen=True)
class HostFamily:
    """What the built-in worker needs of one topology; its seeds are the topology's
    registered blueprints (`blueprints.register_blueprint`)."""

    topology: str
    build: Callable[[TrainingConfig], Host]
    slot_widths: Callable[[TrainingConfig], dict[str, int]]
    load_data: Callable[[TrainingConfig], DataSplit]


FAMILIES: dict[str, HostFamily] = {
    "cnn": HostFamily(
        topology="cnn",
        build=lambda t: HostCNN(t.channels),
        slot_widths=lambda t: HostCNN.slot_channels(t.channels),
        load_data=lambda t: load_digits_split(t.seed, t.val_fraction),
    ),
    blueprints_transformer.TOPOLOGY: HostFamily(
        topology=blueprints_transformer.TOPOLOGY,
        build=lambda t: HostTransformer(t.width, t.context),
        slot_widths=lambda t: HostTransformer.slot_widths(t.width),
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
