"""The stochastic-lorenz built-in dataset: paths of dynvae.sde's StochasticLorenz,
observation noise, irregular grids and missing values."""

import numpy as np
import pytest

from dynvae.data.datasets import load_dataset
from dynvae.errors import ConfigError
from dynvae.sde.processes import stochastic_lorenz_dataset


def test_noise_free_irregular_sequences_are_the_simulated_paths_at_kept_times():
    data = load_dataset("stochastic-lorenz", n=6, n_times=40, noise_std=0.0, drop=0.3,
                        missing=0.2, seed=3)
    t, x = stochastic_lorenz_dataset(6, 3, n_times=40, t_end=2.0)
    t, x = t.double().numpy(), x.double().numpy()
    assert len(data) == 6 and data.dim == 3 and data.feature_names == ["x", "y", "z"]
    assert len(set(data.lengths.tolist())) > 1 and data.lengths.max() < 40
    hidden = []
    for i, seq in enumerate(data):
        keep = np.searchsorted(t, seq.t)
        assert np.allclose(t[keep], seq.t) and seq.t[0] == 0.0
        seen = ~np.isnan(seq.x)
        np.testing.assert_allclose(seq.x[seen], x[i, keep][seen], rtol=1e-6, atol=1e-5)
        hidden.append(1 - seen.mean())
    assert 0.1 < np.mean(hidden) < 0.3


def test_observation_noise_has_the_requested_scale():
    clean = load_dataset("stochastic-lorenz", n=4, n_times=50, noise_std=0.0, seed=1)
    noisy = load_dataset("stochastic-lorenz", n=4, n_times=50, noise_std=0.5, seed=1)
    diff = np.concatenate([(a.x - b.x).ravel() for a, b in zip(noisy, clean, strict=True)])
    assert 0.4 < diff.std() < 0.6 and abs(diff.mean()) < 0.1


@pytest.mark.parametrize("options, message", [
    (dict(drop=1.0), "drop must lie in"),
    (dict(missing=-0.1), "missing must lie in"),
    (dict(n_times=1), "n_times >= 2"),
])
def test_bad_options_are_clear_errors(options, message):
    with pytest.raises(ConfigError, match=message):
        load_dataset("stochastic-lorenz", **options)
