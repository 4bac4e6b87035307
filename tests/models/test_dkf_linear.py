"""A DKF with affine networks is a linear Gaussian SSM: its bounds, imputations,
forecasts and samples are checked against the exact Kalman filter/smoother of
dynvae.ssm on identical inputs (float64)."""

import pytest
import torch

from dynvae.data.batch import SequenceBatch
from dynvae.models.common import log_mean_exp
from dynvae.ssm import kalman_filter, rts_smoother
from tests.models.linear_dkf import ExactPosteriorEncoder, linear_dkf, random_ssm

F64 = torch.float64


def make_batch(B, T, D, U=0, lengths=None, p_obs=0.7, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, T, D, generator=g, dtype=F64)
    mask = torch.rand(B, T, D, generator=g) < p_obs
    mask[:, 0] = True
    lengths = torch.full((B,), T) if lengths is None else torch.tensor(lengths)
    mask &= (torch.arange(T)[None] < lengths[:, None])[..., None]
    u = torch.randn(B, T, U, generator=g, dtype=F64) if U else None
    t = torch.arange(T, dtype=F64).expand(B, T)
    return SequenceBatch(torch.where(mask, x, torch.zeros_like(x)), mask, t, lengths, u)


@pytest.mark.parametrize("S,D,U,coupled", [(1, 3, 0, True), (2, 2, 1, False)])
def test_exact_posterior_encoder_gives_exact_log_likelihood(S, D, U, coupled):
    ssm = random_ssm(S, D, U, coupled=coupled)
    batch = make_batch(4, 6, D, U, lengths=[6, 4, 5, 6])
    model = linear_dkf(ssm)
    model.encoder = ExactPosteriorEncoder(ssm, batch).double()
    exact = kalman_filter(ssm, batch.x, batch.mask, batch.u).log_likelihood      # (B,)
    log_lik, kl, log_ratio = model.path_terms(batch, 64)
    # log p(x, z) - log q(z | x) = log p(x) on every path when q is the exact posterior
    torch.testing.assert_close(log_lik + log_ratio, exact.expand(64, -1), rtol=0, atol=1e-9)
    torch.testing.assert_close(model.log_likelihood_bound(batch, 8), exact, rtol=0, atol=1e-9)
    # the closed-form-KL ELBO is unbiased for the same value: within Monte Carlo error
    log_lik, kl, _ = model.path_terms(batch, 4000)
    per_path = log_lik - kl.sum(-1)                          # KL per latent dim summed
    se = per_path.std(0) / 4000 ** 0.5
    assert ((per_path.mean(0) - exact).abs() < 4 * se + 1e-9).all()


@pytest.mark.parametrize("encoder", ["backward", "local", "filtering", "bidirectional"])
def test_elbo_and_iwae_lie_below_exact_log_likelihood_and_iwae_grows_with_k(encoder):
    ssm = random_ssm(2, 3, coupled=True, seed=3)
    batch = make_batch(3, 5, 3, lengths=[5, 3, 4])
    model = linear_dkf(ssm, encoder=encoder)
    exact = kalman_filter(ssm, batch.x, batch.mask).log_likelihood
    with torch.no_grad():
        log_lik, kl, log_ratio = model.path_terms(batch, 1600)
    elbo = log_lik - kl.sum(-1)
    assert (elbo.mean(0) + 4 * elbo.std(0) / 40 < exact).all()
    log_w = log_lik + log_ratio                                   # (1600, B)
    iwae = {k: log_mean_exp(log_w.reshape(k, -1, 3)) for k in (1, 4, 16, 64)}  # (1600/k, B)
    means = torch.stack([v.mean(0) for v in iwae.values()])          # (4, B)
    # E[IWAE_1] = E[ELBO] (same expectation, two estimators)
    se1 = log_w.std(0) / 40
    assert ((means[0] - elbo.mean(0)).abs() < 4 * (se1 + elbo.std(0) / 40)).all()
    assert (means[1:] >= means[:-1]).all()
    assert (means[-1] <= exact + 4 * iwae[64].std(0) / 5).all()


def test_reconstruct_matches_smoothed_predictive_of_the_ssm():
    ssm = random_ssm(1, 3, seed=5)
    batch = make_batch(2, 6, 3, lengths=[6, 5], p_obs=0.5)
    model = linear_dkf(ssm, n_predict_samples=20000)
    model.encoder = ExactPosteriorEncoder(ssm, batch).double()
    pred = model.reconstruct(batch)
    sm = rts_smoother(ssm, batch.x, batch.mask)
    H, R, d = ssm.emission_matrix, ssm.emission_cov, ssm.emission_bias
    mean = sm.smoothed_mean @ H.T + d                                  # (B, T, D)
    var = torch.diagonal(H @ sm.smoothed_cov @ H.T + R, dim1=-2, dim2=-1)
    torch.testing.assert_close(pred.mean, mean, rtol=0, atol=0.06)
    torch.testing.assert_close(pred.std, var.sqrt(), rtol=0.03, atol=0)


def test_forecast_matches_kalman_prediction():
    ssm = random_ssm(2, 2, coupled=False, seed=6)
    T, Hh = 5, 3
    batch = make_batch(2, T, 2, lengths=[5, 3])
    model = linear_dkf(ssm, n_predict_samples=20000)
    model.encoder = ExactPosteriorEncoder(ssm, batch).double()
    t_future = torch.stack([torch.arange(T, T + Hh), torch.arange(3, 3 + Hh)]).to(F64)
    pred = model.forecast(batch, t_future)
    # reference: filter each sequence over its valid part plus Hh unobserved steps
    for b, L in enumerate(batch.lengths.tolist()):
        x = torch.cat([batch.x[b, :L], torch.zeros(Hh, 2, dtype=F64)])
        mask = torch.cat([batch.mask[b, :L], torch.zeros(Hh, 2, dtype=torch.bool)])
        f = kalman_filter(ssm, x, mask)
        Hm, R, d = ssm.emission_matrix, ssm.emission_cov, ssm.emission_bias
        mean = f.predicted_mean[L:] @ Hm.T + d
        var = torch.diagonal(Hm @ f.predicted_cov[L:] @ Hm.T + R, dim1=-2, dim2=-1)
        torch.testing.assert_close(pred.mean[b], mean, rtol=0, atol=0.06)
        torch.testing.assert_close(pred.std[b], var.sqrt(), rtol=0.03, atol=0)


def test_sample_matches_ssm_marginals():
    ssm = random_ssm(2, 3, U=1, seed=7)
    T = 4
    u = torch.randn(T, 1, dtype=F64)
    model = linear_dkf(ssm)
    x = model.sample(40000, torch.arange(T, dtype=F64), u)                # (n, T, D)
    # marginals of x_t from the filter run with no observations
    f = kalman_filter(ssm, torch.zeros(T, 3, dtype=F64), torch.zeros(T, 3, dtype=torch.bool),
                      u)
    Hm, R = ssm.emission_matrix, ssm.emission_cov
    mean = f.predicted_mean @ Hm.T + ssm.emission_bias + u @ ssm.emission_input.T
    std = torch.diagonal(Hm @ f.predicted_cov @ Hm.T + R, dim1=-2, dim2=-1).sqrt()
    torch.testing.assert_close(x.mean(0), mean, rtol=0, atol=float(4 * std.max() / 200))
    torch.testing.assert_close(x.std(0), std, rtol=0.03, atol=0)
