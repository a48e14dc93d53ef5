"""The 8x8 handwritten digits bundled with scikit-learn: a real image set with no download."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

#: Pixel values in the bundled set run from 0 to 16.
_PIXEL_MAX = 16.0
NUM_CLASSES = 10


@dataclass(frozen=True)
class DataSplit:
    """Train and validation tensors, inputs `*_x` and integer targets `*_y`.

    Digits: images N x 1 x 8 x 8 in [0, 1], labels N. Text: token windows N x T, next tokens
    N x T. A loss over the last axis of the model's output covers both.
    """

    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor


@functools.cache
def _raw_digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits  # slow import: only when data is first needed

    bunch = load_digits()
    return bunch.data.astype(np.float32) / _PIXEL_MAX, bunch.target.astype(np.int64)


def _stratified_indices(
    labels: np.ndarray, val_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per class, a seeded shuffle, then the first round(n x fraction) go to validation."""
    rng = np.random.default_rng(seed)
    train: list[np.ndarray] = []
    val: list[np.ndarray] = []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        cut = round(len(members) * val_fraction)
        val.append(members[:cut])
        train.append(members[cut:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))


def load_digits_split(seed: int = 0, val_fraction: float = 0.2) -> DataSplit:
    """The digits set split train/validation, stratified by class and fixed by `seed`."""
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    pixels, labels = _raw_digits()
    train, val = _stratified_indices(labels, val_fraction, seed)
    images = torch.from_numpy(pixels).reshape(-1, 1, 8, 8)
    targets = torch.from_numpy(labels)
    return DataSplit(
        train_x=images[train].clone(),
        train_y=targets[train].clone(),
        val_x=images[val].clone(),
        val_y=targets[val].clone(),
    )


def shuffled_batches(
    inputs: torch.Tensor, targets: torch.Tensor, batch_size: int, generator: torch.Generator
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Mini-batches in an order drawn from `generator`, so equal generator states give equal
    epochs; the last batch may be short."""
    order = torch.randperm(len(targets), generator=generator)
    for start in range(0, len(order), batch_size):
        index = order[start : start + batch_size]
        yield inputs[index], targets[index]
