"""Healing digits: rotating 8x8 digits with missing pixels (a small Healing MNIST).

Fortuin et al. (2020, Sec. 4.1) build "Healing MNIST" from MNIST digits rotated
through a sequence of angles with pixels missing at random, and score imputation
on the missing pixels against the complete frames. This dataset does the same with
scikit-learn's 1797 8x8 digits (shipped in the wheel), so it is small and fast:
each digit gives one sequence of ``length`` frames (64 pixels in [0, 1]) turning at
a constant random angular speed from a random start angle.
"""

from __future__ import annotations

import numpy as np

from dynvae.data.dataset import Sequence, SequenceDataset
from dynvae.errors import ConfigError
from dynvae.utils import import_optional

SPLITS = {"train": 0, "valid": 1, "test": 2}
SPLIT_FRACTIONS = (0.7, 0.15, 0.15)
MAX_SPEED_DEGREES = 30.0  # |angular speed| per frame


def rotating_digits(n_sequences: int | None = None, length: int = 10, seed: int = 0
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Complete frames (N, T, 64) in [0, 1] and digit labels (N,).

    Digit i turns from a start angle ~ U(-180, 180) degrees at a speed ~
    U(-MAX_SPEED, MAX_SPEED) degrees per frame (bilinear interpolation).
    """
    if length < 2:
        raise ConfigError(f"length must be >= 2 frames, got {length}")
    datasets = import_optional("sklearn.datasets", "datasets", "the 'healing-digits' dataset")
    ndimage = import_optional("scipy.ndimage", "datasets", "the 'healing-digits' dataset")
    digits = datasets.load_digits()
    images = digits.images[:n_sequences] / 16.0  # (N, 8, 8) in [0, 1]
    labels = digits.target[:n_sequences]
    rng = np.random.default_rng(seed)
    start = rng.uniform(-180.0, 180.0, size=len(images))
    speed = rng.uniform(-MAX_SPEED_DEGREES, MAX_SPEED_DEGREES, size=len(images))
    frames = np.empty((len(images), length, 64))
    for i, image in enumerate(images):
        for k in range(length):
            turned = ndimage.rotate(image, start[i] + k * speed[i], reshape=False, order=1,
                                    mode="constant", cval=0.0)
            frames[i, k] = np.clip(turned, 0.0, 1.0).reshape(64)
    return frames, labels


def missing_mask(shape: tuple[int, ...], missing_rate: float, seed: int) -> np.ndarray:
    """Bool array, True where observed: each entry missing independently with
    probability ``missing_rate``; every frame sequence keeps at least one pixel."""
    if not 0.0 <= missing_rate < 1.0:
        raise ConfigError(f"missing_rate must lie in [0, 1), got {missing_rate}")
    rng = np.random.default_rng(seed + 1)
    observed = rng.uniform(size=shape) >= missing_rate
    empty = ~observed.reshape(shape[0], -1).any(axis=1)
    observed[empty, 0, 0] = True
    return observed


def load_healing_digits(split: str = "train", n_sequences: int | None = None,
                        length: int = 10, missing_rate: float = 0.6, seed: int = 0,
                        complete: bool = False) -> SequenceDataset:
    """Rotating digits with pixels missing at random (NaN), t = frame index 0..T-1.

    split: "train", "valid", "test" (a fixed 70/15/15 split by digit) or "all".
    n_sequences: use only the first digits (fast tests). complete: return the same
    sequences without missing pixels (the ground truth for imputation metrics).
    """
    if split not in (*SPLITS, "all"):
        raise ConfigError(f"unknown healing-digits split {split!r}; one of "
                          f"{[*SPLITS, 'all']}")
    frames, labels = rotating_digits(n_sequences, length, seed)
    if not complete:
        observed = missing_mask(frames.shape, missing_rate, seed)
        frames = np.where(observed, frames, np.nan)
    t = np.arange(length, dtype=np.float64)
    sequences = [Sequence(t=t, x=x, id=f"digit{i}-label{label}")
                 for i, (x, label) in enumerate(zip(frames, labels, strict=True))]
    names = [f"pixel{r}_{c}" for r in range(8) for c in range(8)]
    dataset = SequenceDataset(sequences, names, time_unit="frames")
    if split == "all":
        return dataset
    return dataset.split(SPLIT_FRACTIONS, seed=seed)[SPLITS[split]]
