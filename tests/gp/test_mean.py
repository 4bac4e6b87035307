"""StateSpaceGP with a parametric prior mean against the dense exact GP on x - m(t): log
marginal likelihood, its gradient in the mean's weights, posterior; and recovery of a
linear trend by fitting."""

import numpy as np
import pytest
import torch

from dynvae.errors import ConfigError
from dynvae.gp.exact import exact_log_marginal_likelihood, exact_posterior
from dynvae.gp.inference import ParallelKalman
from dynvae.gp.kernels import Matern12, Matern52, QuasiPeriodic
from dynvae.gp.mean import MEANS, BasisMean, ConstantMean, LinearMean, ZeroMean
from dynvae.gp.regression import StateSpaceGP
from tests.gp.test_fit_recovery import sample_data
from tests.gp.test_regression_exact import irregular_data, new_times, relerr

DT = torch.float64

MEAN_CASES = {
    "constant": (lambda: ConstantMean(0.7), [{"constant": -1.3}]),
    "linear": (lambda: LinearMean(0.4, 0.25, t_ref=6.0), [{"intercept": 2.5, "slope": -0.3}]),
}


def set_weights(gp, d, values):
    with torch.no_grad():
        for i, name in enumerate(gp.means[d].names):
            gp.means[d].weights[i] = values[name]


@pytest.mark.parametrize("name", list(MEAN_CASES))
def test_mean_gp_equals_dense_exact_gp_on_residuals(name):
    make_mean, second = MEAN_CASES[name]
    t, x = irregular_data(T=60, D=2, seed=7)
    x = x + 0.3 * t[:, None]                                  # a trend in both outputs
    noise = 0.15
    gp = StateSpaceGP(Matern52(2.0, 0.8) + QuasiPeriodic(2.1, 1.2, 4.0, 0.9, order=4),
                      num_outputs=2, noise_variance=noise, mean=make_mean())
    set_weights(gp, 1, second[0])                             # outputs differ in their mean
    t_new = torch.cat([new_times(), t[20:23]])                # extrapolation and training times
    with torch.no_grad():
        lml = gp.log_marginal_likelihood(t, x)
        gp.set_data(t, x)
        pred = gp.predict(t_new)
    ref = 0.0
    for d in range(2):
        m = gp.means[d]
        with torch.no_grad():
            r = x[:, d] - m(t)                                # NaN stays NaN: missing
            ref = ref + exact_log_marginal_likelihood(gp.kernels[d], t, r, noise)
            mean, var = exact_posterior(gp.kernels[d], t, r, noise, t_new)
            mean = mean + m(t_new)
        assert relerr(pred.mean[:, d], mean) < 1e-8
        assert relerr(pred.variance[:, d], var) < 1e-8
    assert relerr(lml, ref) < 1e-8


def test_gradient_in_the_mean_weights_equals_the_dense_formula():
    """d log N(y | Phi w, K) / dw = Phi^T K^-1 (y - Phi w), K = Gram + noise I (dense)."""
    t, x = irregular_data(T=50, seed=8)
    noise = 0.2
    gp = StateSpaceGP(Matern52(1.5, 1.1), noise_variance=noise,
                      mean=LinearMean(0.3, -0.2, t_ref=4.0))
    grad, = torch.autograd.grad(gp.log_marginal_likelihood(t, x), gp.means[0].weights)
    keep = ~torch.isnan(x[:, 0])
    to, yo = t[keep], x[keep, 0]
    with torch.no_grad():
        phi = gp.means[0].basis(to)                                      # (T, 2)
        K = gp.kernels[0].covariance(to, to) + noise * torch.eye(len(to), dtype=DT)
        ref = phi.T @ torch.linalg.solve(K, yo - phi @ gp.means[0].weights)
    assert relerr(grad, ref) < 1e-8


def test_prediction_and_samples_add_the_mean_back():
    t, x = irregular_data(T=30, seed=9)
    gp = StateSpaceGP(Matern52(0.7, 1.0), noise_variance=0.1, mean=LinearMean(5.0, 2.0, 3.0))
    gp.set_data(t, x + 5.0 + 2.0 * (t[:, None] - 3.0))
    t_new = torch.tensor([0.5, 5.0, 30.0], dtype=DT)
    with torch.no_grad():
        pred = gp.predict(t_new)
        f = gp.sample_posterior(t_new, n_samples=2000, generator=torch.Generator().manual_seed(1))
    assert f.shape == (2000, 3, 1)
    se = (pred.variance / 2000).sqrt()
    assert ((f.mean(0) - pred.mean).abs() < 4.5 * se).all()
    # far beyond the data the posterior reverts to the prior mean: the line
    assert float(pred.mean[2, 0]) == pytest.approx(5.0 + 2.0 * 27.0, abs=0.05)


def test_initialisation_is_least_squares_on_observed_entries():
    t, x = irregular_data(T=40, seed=10)
    y = x[:, 0] + 1.5 - 0.4 * t
    keep = ~torch.isnan(y)
    slope, intercept = np.polyfit(t[keep].numpy(), y[keep].numpy(), 1)
    gp = StateSpaceGP(Matern12(), mean=LinearMean())
    gp.initialize_mean(t, y)
    hp = gp.mean_parameters()
    assert hp["t_ref"] == pytest.approx(float(t[keep].mean()), rel=1e-12)
    assert hp["slope"] == pytest.approx(slope, rel=1e-9)
    assert hp["intercept"] + hp["slope"] * (0.0 - hp["t_ref"]) == pytest.approx(intercept,
                                                                                rel=1e-9)
    const = ConstantMean()
    const.initialize(t, y)
    assert const.hyperparameters()["constant"] == pytest.approx(float(y[keep].mean()), rel=1e-12)
    assert StateSpaceGP(Matern12()).mean_parameters() == {}            # ZeroMean by default
    assert list(StateSpaceGP(Matern12(), mean=ZeroMean()).means[0].parameters()) == []


def test_rescaled_parameters_describe_the_unstandardised_mean():
    m = LinearMean(0.5, 0.1, t_ref=2000.0)
    out = m.rescaled(center=350.0, scale=20.0)
    assert out == pytest.approx({"intercept": 360.0, "slope": 2.0, "t_ref": 2000.0})
    assert ConstantMean(-0.5).rescaled(10.0, 4.0) == pytest.approx({"constant": 8.0})
    assert set(MEANS) == {"zero", "constant", "linear"}



class QuadraticMean(BasisMean):
    names = ("constant", "linear", "quadratic")

    def basis(self, t):
        return torch.stack([torch.ones_like(t), t, t ** 2], -1)


def test_a_new_basis_mean_is_one_class():
    with pytest.raises(ConfigError, match="takes 3 weights"):
        QuadraticMean(1.0)
    t = torch.linspace(0, 3, 20, dtype=DT)
    y = 1.0 - 2.0 * t + 0.5 * t ** 2
    y[3] = float("nan")
    m = QuadraticMean(0.0, 0.0, 0.0)
    m.initialize(t, y)
    assert m.hyperparameters() == pytest.approx({"constant": 1.0, "linear": -2.0,
                                                 "quadratic": 0.5})


def test_fit_recovers_a_linear_trend_under_a_gp():
    truth = Matern12(lengthscale=0.5, variance=1.0)
    t, f = sample_data(truth, T=300, span=60.0, noise=0.05, seed=11)
    intercept, slope = 3.0, 0.8                      # at t_ref = mean time (30 +- 2)
    t_ref = float(t.mean())
    y = f + intercept + slope * (t - t_ref)
    gp = StateSpaceGP(Matern12(lengthscale=2.0, variance=0.5), noise_variance=0.3,
                      mean=LinearMean(), engine=ParallelKalman())
    fit = gp.fit(t, y, max_iter=40)
    hp = gp.mean_parameters()
    # standard errors of the GLS weights under the true GP: Var(w) = (Phi^T K^-1 Phi)^-1
    with torch.no_grad():
        phi = gp.means[0].basis(t)
        K = truth.covariance(t, t) + 0.05 * torch.eye(len(t), dtype=DT)
        se = torch.linalg.inv(phi.T @ torch.linalg.solve(K, phi)).diagonal().sqrt()
    assert np.isfinite(fit.log_marginal_likelihood)
    assert hp["t_ref"] == pytest.approx(t_ref)
    assert abs(hp["slope"] - slope) < 4 * float(se[1])
    assert abs(hp["intercept"] - intercept) < 4 * float(se[0])
    assert gp.hyperparameters()["lengthscale"] == pytest.approx(0.5, rel=0.35)
