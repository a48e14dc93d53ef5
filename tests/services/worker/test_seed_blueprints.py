"""Every cnn blueprint of the catalogue has a real, shape-preserving seed module."""

from __future__ import annotations

import pytest
import torch

from leyline.actions import DEFAULT_CATALOG
from services.worker import HostCNN, UnknownBlueprintError, blueprints, build_seed
from services.worker.blueprints import parameter_count

CNN_BLUEPRINTS = [spec.name for spec in DEFAULT_CATALOG.blueprints("cnn")]


def test_every_catalogued_cnn_blueprint_has_a_factory() -> None:
    assert [b.name for b in blueprints("cnn")] == CNN_BLUEPRINTS


@pytest.mark.parametrize("blueprint", CNN_BLUEPRINTS)
@pytest.mark.parametrize("channels", [16, 32, 64])
def test_seed_preserves_shape_on_the_spec_probe(blueprint: str, channels: int) -> None:
    seed = build_seed(blueprint, channels)
    probe = torch.randn(1, channels, 8, 8)
    assert seed(probe).shape == probe.shape
    assert seed(torch.randn(5, channels, 4, 4)).shape == (5, channels, 4, 4)


@pytest.mark.parametrize("spec", DEFAULT_CATALOG.blueprints("cnn"), ids=lambda s: s.name)
def test_seed_size_matches_the_catalogue_estimate_at_64_channels(spec: object) -> None:
    estimate = spec.param_estimate  # type: ignore[attr-defined]
    actual = parameter_count(build_seed(spec.name, 64))  # type: ignore[attr-defined]
    assert estimate / 2 <= actual <= estimate * 2


def test_seeds_fit_every_host_slot() -> None:
    for channels in HostCNN.slot_channels().values():
        for blueprint in CNN_BLUEPRINTS:
            x = torch.randn(2, channels, 4, 4)
            assert build_seed(blueprint, channels)(x).shape == x.shape


def test_unknown_blueprint_is_refused_by_name() -> None:
    with pytest.raises(UnknownBlueprintError, match="lora"):
        build_seed("lora", 32)
