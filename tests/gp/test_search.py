"""Kernel search (dynvae.gp.search): on exact samples of known kernels it keeps a periodic
part at the true period when there is one and none when there is not; the choice is the
lowest BIC of the candidates tried; the fitted spec rebuilds the fitted kernel."""

import math

import numpy as np
import pytest
import torch

from dynvae.gp.inference import FisherKalman, ParallelKalman
from dynvae.gp.initialization import data_scales
from dynvae.gp.kernels import Matern32, Periodic
from dynvae.gp.kernels.registry import parse_kernel, split_spec
from dynvae.gp.mean import ConstantMean
from dynvae.gp.search import bic, score, search_kernel

DT = torch.float64


def sample(kernel, T, span, noise, seed):
    """One exact path of the kernel's GP on a random irregular grid, plus noise."""
    g = torch.Generator().manual_seed(seed)
    t = torch.sort(torch.rand(T, generator=g, dtype=DT) * span).values
    with torch.no_grad():
        K = kernel.covariance(t, t) + noise * torch.eye(T, dtype=DT)
        y = torch.linalg.cholesky(K) @ torch.randn(T, generator=g, dtype=DT)
    return t, (y - y.mean()) / y.std()


def engine():
    from dynvae.ssm.native import native_available
    return FisherKalman() if native_available() else ParallelKalman()


def run_search(t, y):
    scales = data_scales(t.numpy(), y.numpy(), harmonics=3)
    return scales, search_kernel(t, y, scales, None, engine(), order=3, max_iter=20)


def test_search_finds_the_period_of_a_seasonal_sample():
    truth = Matern32(6.0, 1.0) + Periodic(2.5, 1.0, 1.0, order=4)
    t, y = sample(truth, 250, 40.0, 0.05, seed=3)
    scales, result = run_search(t, y)
    assert scales.periods[0] == pytest.approx(2.5, rel=0.02)
    factors = [f for term in split_spec(result.spec) for f in term]
    periods = [dict(f.values)["period"] for f in factors if "period" in dict(f.values)]
    assert len(periods) == 1 and periods[0] == pytest.approx(2.5, rel=0.01)
    scores = [score(c) for c in result.candidates]
    n_obs = len(t)
    for c in result.candidates:
        assert c.bic == pytest.approx(bic(c.log_marginal_likelihood, c.n_parameters, n_obs))
    # the chosen kernel is the best candidate (BIC, +10 for a linear mean); the fitted spec
    # rebuilds it
    best = result.candidates[int(np.argmin(scores))]
    rebuilt = parse_kernel(result.spec)
    lags = torch.linspace(0, 5, 11, dtype=DT)
    torch.testing.assert_close(rebuilt.stationary_covariance(lags).detach(),
                               result.gp.kernels[0].stationary_covariance(lags).detach(),
                               rtol=1e-4, atol=1e-7)           # 6 significant digits
    assert best.spec == result.spec
    with torch.no_grad():
        assert float(result.gp.log_marginal_likelihood(t, y)) == pytest.approx(
            best.log_marginal_likelihood, abs=1e-6)


def test_search_keeps_no_periodic_part_without_a_period():
    t, y = sample(Matern32(2.0, 1.0), 200, 40.0, 0.05, seed=4)
    scales, result = run_search(t, y)
    assert scales.periods == ()
    assert "periodic" not in result.spec
    assert math.isfinite(result.candidates[0].bic)


def test_search_with_a_given_mean_and_a_window():
    truth = Matern32(6.0, 1.0) + Periodic(2.5, 1.0, 1.0, order=4)
    t, y = sample(truth, 200, 30.0, 0.05, seed=5)
    scales = data_scales(t.numpy(), y.numpy())
    result = search_kernel(t, y, scales, ConstantMean(), engine(), order=2, max_iter=10,
                           max_points=120)
    assert {c.mean for c in result.candidates} == {"ConstantMean"}
    # candidates scored on the last 120 points, the chosen kernel refitted on all 200
    assert result.gp.train_t.shape == (200,)
