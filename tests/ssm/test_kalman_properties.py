"""Masks, padding, sampling, gradients, precision and input checks of the Kalman core."""

import pytest
import torch

from dynvae.errors import DataError
from dynvae.ssm import (
    LinearGaussianSSM,
    ffbs_sample,
    kalman_filter,
    parallel_kalman_filter,
    parallel_rts_smoother,
    rts_smoother,
)
from tests.reference.dense_lgssm import condition, joint_moments
from tests.ssm.lgssm_cases import constant_model, rich_model

SMOOTHERS = [rts_smoother, parallel_rts_smoother]
FILTERS = [kalman_filter, parallel_kalman_filter]


@pytest.mark.parametrize("smoother", SMOOTHERS)
def test_partly_masked_step_equals_removing_rows_of_H_and_R(smoother):
    """A model whose step k emits only the observed rows (smaller H_k, R_k), conditioned
    densely, against the masked-entry trick on the full model."""
    T, D, k, keep = 6, 3, 2, [0, 2]
    model = constant_model(S=3, D=D, seed=4)
    x = torch.randn(T, D, dtype=torch.float64)
    mask = torch.ones(T, D, dtype=torch.bool)
    mask[k, 1] = False
    H, R = model.emission_matrix, model.emission_cov
    Hs = [H[keep] if t == k else H for t in range(T)]
    Rs = [R[keep][:, keep] if t == k else R for t in range(T)]
    moments = joint_moments(model.initial_mean, model.initial_cov, [model.transition_matrix] * T,
                            [model.transition_cov] * T, Hs, Rs, T)
    flat_x = torch.cat([x[t, keep] if t == k else x[t] for t in range(T)])
    ll, mean, cov, cross = condition(*moments, flat_x, torch.ones_like(flat_x, dtype=torch.bool),
                                     3, T=T)
    out = smoother(model, x, mask)
    torch.testing.assert_close(out.log_likelihood, ll, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(out.smoothed_mean, mean, rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(out.smoothed_cov, cov, rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(out.smoothed_cross_cov[1:], cross, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("kalman", FILTERS)
def test_trailing_padding_gives_the_truncated_log_likelihood(kalman):
    T, pad = 12, 5
    model = constant_model(seed=2)
    x = torch.randn(2, T + pad, 2, dtype=torch.float64)
    mask = torch.ones_like(x, dtype=torch.bool)
    mask[:, T:] = False
    x_padded = x.clone()
    x_padded[:, T:] = 123.0                                  # values under the mask are ignored
    full = kalman(model, x_padded, mask)
    short = kalman(model, x[:, :T])
    torch.testing.assert_close(full.log_likelihood, short.log_likelihood, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(full.filtered_mean[:, :T], short.filtered_mean)


def test_ffbs_samples_match_smoothed_moments():
    T, K = 8, 4000
    model = rich_model(T, S=2, D=1, U=1, seed=5)
    x = torch.randn(T, 1, dtype=torch.float64)
    u = torch.randn(T, 1, dtype=torch.float64)
    sm = rts_smoother(model, x, u=u)
    z = ffbs_sample(model, x, u=u, n_samples=K, generator=torch.Generator().manual_seed(0))
    assert z.shape == (K, T, 2)
    std = torch.diagonal(sm.smoothed_cov, dim1=-2, dim2=-1).sqrt()
    mc_se = std / K**0.5
    assert ((z.mean(0) - sm.smoothed_mean).abs() < 4 * mc_se).all()
    centred = z - z.mean(0)
    sample_cov = torch.einsum("kti,ktj->tij", centred, centred) / (K - 1)
    # entries of a sample covariance have standard error about sqrt(2/K) * var
    tol = 5 * (2 / K) ** 0.5 * std.unsqueeze(-1) * std.unsqueeze(-2)
    assert ((sample_cov - sm.smoothed_cov).abs() < tol).all()
    lag = torch.einsum("kti,ktj->tij", centred[:, 1:], centred[:, :-1]) / (K - 1)
    assert ((lag - sm.smoothed_cross_cov[1:]).abs() < tol[1:]).all()


@pytest.mark.parametrize("kalman", FILTERS)
def test_gradcheck_log_likelihood_wrt_A_Q_R(kalman):
    model = constant_model(S=2, D=2, seed=6)
    x = torch.randn(4, 2, dtype=torch.float64)
    mask = torch.tensor([[1, 1], [1, 0], [0, 0], [1, 1]], dtype=torch.bool)

    def log_lik(A, Lq, Lr):
        m = LinearGaussianSSM(model.initial_mean, model.initial_cov, A, Lq @ Lq.T + 0.1 * I,
                              model.emission_matrix, Lr @ Lr.T + 0.1 * I)
        return kalman(m, x, mask).log_likelihood

    I = torch.eye(2, dtype=torch.float64)
    args = [t.clone().requires_grad_(True) for t in
            (model.transition_matrix, torch.linalg.cholesky(model.transition_cov),
             torch.linalg.cholesky(model.emission_cov))]
    assert torch.autograd.gradcheck(log_lik, args)


@pytest.mark.parametrize("smoother", SMOOTHERS)
def test_float32_agrees_with_float64(smoother):
    T = 50
    model = rich_model(T, seed=7)
    x = torch.randn(2, T, 2, dtype=torch.float64)
    u = torch.randn(2, T, 2, dtype=torch.float64)
    ref = smoother(model, x, None, u)
    out = smoother(model.to(dtype=torch.float32), x.float(), None, u.float())
    assert out.smoothed_mean.dtype == torch.float32
    torch.testing.assert_close(out.smoothed_mean.double(), ref.smoothed_mean, rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(out.smoothed_cov.double(), ref.smoothed_cov, rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(out.log_likelihood.double(), ref.log_likelihood, rtol=1e-4,
                               atol=1e-2)


@pytest.mark.parametrize("kalman", FILTERS)
def test_bad_shapes_raise_data_error(kalman):
    model = constant_model()
    with pytest.raises(DataError, match="channels"):
        kalman(model, torch.zeros(5, 3, dtype=torch.float64))
    with pytest.raises(DataError, match="x must have shape"):
        kalman(model, torch.zeros(2, dtype=torch.float64))
    with pytest.raises(DataError, match="mask shape"):
        kalman(model, torch.zeros(5, 2, dtype=torch.float64), torch.ones(5, 1, dtype=torch.bool))
    tv = rich_model(7)
    with pytest.raises(DataError, match="time-varying"):
        kalman(tv, torch.zeros(5, 2, dtype=torch.float64), u=torch.zeros(5, 2))
    with pytest.raises(DataError, match="no inputs"):
        kalman(tv, torch.zeros(7, 2, dtype=torch.float64))
    with pytest.raises(DataError, match="u has"):
        kalman(tv, torch.zeros(7, 2, dtype=torch.float64), u=torch.zeros(6, 2))
