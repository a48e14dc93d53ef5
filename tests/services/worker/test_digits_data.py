"""The digits split: shapes, scaling, stratification, and reproducible batches."""

from __future__ import annotations

import torch

from services.worker import DataSplit, load_digits_split, shuffled_batches


def test_split_is_scaled_images_with_all_samples(digits: DataSplit) -> None:
    assert digits.train_x.shape[1:] == (1, 8, 8)
    assert digits.train_x.dtype == torch.float32 and digits.train_y.dtype == torch.int64
    assert len(digits.train_y) + len(digits.val_y) == 1797
    assert float(digits.train_x.min()) >= 0.0 and float(digits.train_x.max()) <= 1.0
    assert abs(len(digits.val_y) / 1797 - 0.2) < 0.01


def test_split_is_stratified_by_class(digits: DataSplit) -> None:
    train = torch.bincount(digits.train_y, minlength=10).float()
    val = torch.bincount(digits.val_y, minlength=10).float()
    fraction = val / (train + val)
    assert float((fraction - 0.2).abs().max()) < 0.01


def test_split_depends_only_on_its_seed(digits: DataSplit) -> None:
    again = load_digits_split(seed=0)
    other = load_digits_split(seed=1)
    assert torch.equal(again.val_x, digits.val_x)
    assert not torch.equal(other.val_y, digits.val_y) or not torch.equal(other.val_x, digits.val_x)


def test_batches_cover_the_set_once_in_a_generator_fixed_order(digits: DataSplit) -> None:
    def labels(seed: int) -> list[torch.Tensor]:
        gen = torch.Generator().manual_seed(seed)
        return [y for _, y in shuffled_batches(digits.train_x, digits.train_y, 64, gen)]

    first, again, other = labels(3), labels(3), labels(4)
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert any(not torch.equal(a, b) for a, b in zip(first, other, strict=True))
    assert sum(len(y) for y in first) == len(digits.train_y)
    assert torch.equal(torch.cat(first).sort().values, digits.train_y.sort().values)
