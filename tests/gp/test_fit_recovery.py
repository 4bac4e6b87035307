"""Fitting recovers the hyperparameters of a kernel from paths sampled from it."""

import pytest
import torch

from dynvae.gp.kernels import Matern12, Matern32, Periodic, QuasiPeriodic
from dynvae.gp.regression import StateSpaceGP

DT = torch.float64


def sample_data(kernel, T, span, noise, seed):
    """One exact sample path of the kernel's GP on a random irregular grid, plus noise."""
    g = torch.Generator().manual_seed(seed)
    t = torch.sort(torch.rand(T, generator=g, dtype=DT) * span).values
    ss = kernel.state_space()
    with torch.no_grad():
        z0 = torch.linalg.cholesky(ss.Pinf + 1e-12 * torch.eye(len(ss.Pinf), dtype=DT)) @ \
            torch.randn(len(ss.Pinf), generator=g, dtype=DT)
        f = (kernel.sde().sample(t, z0, generator=g)[0] @ ss.H.T)[:, 0]   # (T,)
    return t, f + noise ** 0.5 * torch.randn(T, generator=g, dtype=DT)


def test_fit_recovers_matern12_hyperparameters():
    truth = Matern12(lengthscale=0.5, variance=2.0)
    t, y = sample_data(truth, T=250, span=60.0, noise=0.1, seed=0)
    gp = StateSpaceGP(Matern12(lengthscale=2.0, variance=0.5), noise_variance=0.5)
    with torch.no_grad():
        before = float(gp.log_marginal_likelihood(t, y))
    fit = gp.fit(t, y, max_iter=40)
    hp = gp.hyperparameters()
    assert fit.log_marginal_likelihood > before
    assert hp["lengthscale"] == pytest.approx(0.5, rel=0.3)
    assert hp["variance"] == pytest.approx(2.0, rel=0.3)
    assert hp["noise_variance"] == pytest.approx(0.1, rel=0.5)


@pytest.mark.slow
def test_fit_recovers_matern32_and_period():
    truth = Matern32(1.5, 1.0) + Periodic(period=3.0, lengthscale=1.0, variance=1.0, order=4)
    t, y = sample_data(truth, T=800, span=120.0, noise=0.05, seed=1)
    gp = StateSpaceGP(Matern32(3.0, 0.5) + Periodic(period=2.8, lengthscale=1.5, variance=0.5,
                                                    order=4), noise_variance=0.2)
    gp.fit(t, y, max_iter=60)
    hp = gp.hyperparameters()
    assert hp["kernels.1.period"] == pytest.approx(3.0, rel=0.02)
    assert hp["kernels.0.lengthscale"] == pytest.approx(1.5, rel=0.35)
    assert hp["noise_variance"] == pytest.approx(0.05, rel=0.5)


@pytest.mark.slow
def test_fit_recovers_quasiperiodic_period():
    truth = QuasiPeriodic(period=2.0, lengthscale=0.8, decay_lengthscale=15.0, variance=1.5,
                          order=4)
    t, y = sample_data(truth, T=600, span=100.0, noise=0.05, seed=2)
    gp = StateSpaceGP(QuasiPeriodic(1.9, 1.0, 8.0, 1.0, order=4), noise_variance=0.2)
    gp.fit(t, y, max_iter=60)
    hp = gp.hyperparameters()
    assert hp["right.period"] == pytest.approx(2.0, rel=0.01)
    assert hp["right.lengthscale"] == pytest.approx(0.8, rel=0.3)
