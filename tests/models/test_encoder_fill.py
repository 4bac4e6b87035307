"""The encoder input's fill of unseen entries: linear interpolation in time of each
feature's seen values, against numpy's np.interp on irregular times, ragged lengths
and garbage in unseen entries and padding."""

import numpy as np
import pytest
import torch

from dynvae.data.batch import SequenceBatch
from dynvae.models.common import observation_features


def ragged_batch(seed: int = 0, B: int = 5, T: int = 12, D: int = 3) -> SequenceBatch:
    rng = np.random.default_rng(seed)
    lengths = torch.tensor([T, 9, 4, 1, 7][:B])
    t = np.cumsum(rng.uniform(0.2, 2.0, size=(B, T)), axis=1)          # irregular times
    x = rng.normal(size=(B, T, D))
    mask = rng.random((B, T, D)) < 0.5
    mask[2, :, 1] = False                                   # a feature never seen
    mask[4, :, 0] = False
    mask[4, 3, 0] = True                                    # seen once: constant fill
    valid = np.arange(T)[None] < lengths.numpy()[:, None]
    mask &= valid[..., None]
    x = np.where(mask, x, 1e6)                              # garbage where unseen
    t = np.where(valid, t, np.nan)                          # and NaN times on padding
    return SequenceBatch(torch.tensor(x), torch.tensor(mask), torch.tensor(t), lengths)


def np_fill(batch: SequenceBatch, by: str = "time") -> np.ndarray:
    x, mask, t = batch.x.numpy(), batch.mask.numpy(), batch.t.numpy()
    if by == "steps":
        t = np.broadcast_to(np.arange(x.shape[1], dtype=float), t.shape)
    out = np.zeros_like(x)
    for b, n in enumerate(batch.lengths.tolist()):
        for d in range(x.shape[2]):
            seen = mask[b, :n, d]
            if seen.any():          # np.interp holds the end values beyond the seen range
                out[b, :n, d] = np.interp(t[b, :n], t[b, :n][seen], x[b, :n, d][seen])
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("by", ["time", "steps"])
def test_linear_fill_equals_numpy_interp(seed, by):
    batch = ragged_batch(seed)
    D = batch.x.shape[2]
    features = observation_features(batch, fill=by)
    np.testing.assert_allclose(features[..., :D].numpy(), np_fill(batch, by), rtol=0,
                               atol=1e-12)
    np.testing.assert_array_equal(features[..., D:].numpy(), batch.mask.numpy())
    zero = observation_features(batch)[..., :D].numpy()                 # the default
    np.testing.assert_array_equal(zero, np.where(batch.mask.numpy(), batch.x.numpy(), 0.0))


def test_fill_reads_only_the_mask_it_is_given():
    batch = ragged_batch(3)
    seen = batch.mask & (torch.rand(batch.mask.shape, generator=torch.Generator().manual_seed(0))
                         < 0.6)                            # e.g. the encoder's mask
    expect = np_fill(SequenceBatch(batch.x, seen, batch.t, batch.lengths))
    got = observation_features(batch, seen, "time")[..., :batch.x.shape[2]].numpy()
    np.testing.assert_allclose(got, expect, rtol=0, atol=1e-12)


def test_an_unknown_fill_is_an_error():
    with pytest.raises(ValueError, match="fill must be"):
        observation_features(ragged_batch(), fill="mean")


def test_causal_recurrences_read_the_last_seen_value():
    """previous_observations (what STORN's and the SRNN's forward recurrences read for
    x_{t-1}) holds each unseen entry's last seen value, 0 before its first, never a
    later value, never the garbage in unseen entries; the mask channel is the mask."""
    from dynvae.models.common import last_observation, previous_observations
    batch = ragged_batch(seed=3)
    x, mask = batch.x.numpy(), batch.mask.numpy()
    B, T, D = x.shape
    expected = np.zeros((B, T, 2 * D))
    for b in range(B):
        for d in range(D):
            seen = 0.0
            for t in range(1, T):
                if mask[b, t - 1, d]:
                    seen = x[b, t - 1, d]
                expected[b, t, d] = seen
                expected[b, t, D + d] = mask[b, t - 1, d]
    got = previous_observations(batch).numpy()
    for b, L in enumerate(batch.lengths.tolist()):
        np.testing.assert_array_equal(got[b, :L], expected[b, :L])
        last = last_observation(batch)[b].numpy()
        if L < T:
            np.testing.assert_array_equal(last, expected[b, L])
