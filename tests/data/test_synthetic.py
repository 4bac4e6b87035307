"""LGSSM sampler against the exact joint moments of the model, built densely."""

import numpy as np
import pytest
import torch

from dynvae.data import random_stable_lgssm, sample_lgssm, synthetic_lgssm, synthetic_lgssm_dataset
from dynvae.errors import ConfigError, DataError
from dynvae.ssm import LinearGaussianSSM
from tests.reference.dense_lgssm import joint_moments


def assert_moments_match(samples, mean, cov, k=5.0):
    """Empirical mean/covariance of (n, P) samples within k Monte Carlo standard errors."""
    n = samples.shape[0]
    emp_mean = samples.mean(0)
    centred = samples - emp_mean
    emp_cov = centred.T @ centred / (n - 1)
    var = torch.diagonal(cov)
    mean_se = (var / n).sqrt()
    cov_se = ((var[:, None] * var[None, :] + cov ** 2) / n).sqrt()    # Gaussian 4th moments
    assert ((emp_mean - mean).abs() <= k * mean_se).all(), (emp_mean - mean) / mean_se
    assert ((emp_cov - cov).abs() <= k * cov_se).all(), ((emp_cov - cov) / cov_se).abs().max()
    # and the test has power: a 10% scale error in the covariance would be seen
    assert ((1.1 * cov - cov).abs() > k * cov_se).any()


def model_with_offsets(S=2, D=3, U=2, T=6, singular_q=False):
    g = torch.Generator().manual_seed(1)
    r = lambda *shape: torch.randn(*shape, generator=g, dtype=torch.float64)
    Lq, Lr = r(S, S), r(D, D)
    Q = Lq @ Lq.T * 0.2 + 0.05 * torch.eye(S, dtype=torch.float64)
    if singular_q:
        Q = torch.outer(Lq[0], Lq[0]) * 0.2                      # rank one
    model = LinearGaussianSSM(
        initial_mean=r(S), initial_cov=torch.eye(S, dtype=torch.float64) * 0.7,
        transition_matrix=0.6 * torch.linalg.qr(r(S, S))[0], transition_cov=Q,
        emission_matrix=r(T, D, S), emission_cov=Lr @ Lr.T * 0.1 + 0.1 * torch.eye(D).double(),
        transition_bias=r(S), emission_bias=r(D), transition_input=r(S, U),
        emission_input=r(D, U), time_varying={"emission_matrix"})
    return model, r(T, U)


@pytest.mark.parametrize("singular_q", [False, True])
def test_sampler_matches_exact_joint_moments(singular_q):
    S, D, T, n = 2, 3, 6, 40_000
    model, u = model_with_offsets(T=T, singular_q=singular_q)
    g = torch.Generator().manual_seed(0)
    z, x = sample_lgssm(model, n, T, generator=g, u=u)
    assert z.shape == (n, T, S) and x.shape == (n, T, D) and x.dtype == torch.float64
    # offsets written out from the model equations, not taken from model.offsets
    trans_off = u @ model.transition_input.T + model.transition_bias          # (T, S)
    emis_off = u @ model.emission_input.T + model.emission_bias               # (T, D)
    H = list(model.emission_matrix)
    mz, Czz, mx, Cxx, _ = joint_moments(
        model.initial_mean, model.initial_cov, [model.transition_matrix] * T,
        [model.transition_cov] * T, H, [model.emission_cov] * T, T, trans_off, emis_off)
    assert_moments_match(z.reshape(n, -1), mz, Czz)
    assert_moments_match(x.reshape(n, -1), mx, Cxx)


def test_sampler_is_reproducible_and_validates():
    model = random_stable_lgssm(2, 3, seed=0)
    a = sample_lgssm(model, 4, 5, generator=torch.Generator().manual_seed(7))
    b = sample_lgssm(model, 4, 5, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a[1], b[1]) and torch.equal(a[0], b[0])
    with pytest.raises(ConfigError, match="n and T must be >= 1"):
        sample_lgssm(model, 0, 5)
    with_input, _ = model_with_offsets()
    with pytest.raises(DataError, match="no inputs u were given"):
        sample_lgssm(with_input, 3, 6)
    with pytest.raises(DataError, match="time-varying emission_matrix has 6 steps, asked for T=4"):
        sample_lgssm(with_input, 3, 4, u=torch.zeros(4, 2))
    with pytest.raises(DataError, match=r"u must have shape \(n, T, U\) or \(T, U\)"):
        sample_lgssm(with_input, 3, 6, u=torch.zeros(2, 6, 2))


@pytest.mark.parametrize("seed", range(5))
def test_random_stable_lgssm_is_stable_and_seeded(seed):
    model = random_stable_lgssm(4, 2, seed)
    radius = torch.linalg.eigvals(model.transition_matrix).abs().max()
    assert 0.6 - 1e-12 <= radius <= 0.9 + 1e-12
    for cov in (model.transition_cov, model.emission_cov, model.initial_cov):
        assert torch.linalg.eigvalsh(cov).min() >= 0.05 - 1e-12
    again = random_stable_lgssm(4, 2, seed, dtype=torch.float32)
    assert again.transition_matrix.dtype == torch.float32
    torch.testing.assert_close(again.transition_matrix.double(), model.transition_matrix,
                               rtol=1e-6, atol=1e-7)


def test_synthetic_dataset_hides_entries_of_the_true_samples():
    out = synthetic_lgssm(n=40, T=50, S=2, D=3, missing=0.3, seed=2)
    ds = out.dataset
    assert len(ds) == 40 and ds.dim == 3 and out.states.shape == (40, 50, 2)
    x = np.stack([s.x for s in ds])
    hidden = np.isnan(x)
    assert abs(hidden.mean() - 0.3) < 0.02                 # 6000 Bernoulli(0.3) draws
    np.testing.assert_array_equal(x[~hidden], out.complete.numpy()[~hidden])
    np.testing.assert_array_equal(ds[0].t, np.arange(50.0))
    assert out.model.state_dim == 2 and out.model.obs_dim == 3
    same = synthetic_lgssm_dataset(n=40, T=50, S=2, D=3, missing=0.3, seed=2)
    np.testing.assert_array_equal(np.stack([s.x for s in same]), x)


def test_synthetic_dataset_keeps_one_entry_per_sequence():
    ds = synthetic_lgssm_dataset(n=30, T=1, S=1, D=1, missing=0.95, seed=0)
    assert all(s.mask.sum() == 1 for s in ds)
    with pytest.raises(ConfigError, match=r"missing must lie in \[0, 1\)"):
        synthetic_lgssm_dataset(missing=1.0)
