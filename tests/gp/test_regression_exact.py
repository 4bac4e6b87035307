"""StateSpaceGP (Kalman, O(T)) against dense exact GP regression on irregular times with
missing values: dynvae's own dense reference and scikit-learn's GaussianProcessRegressor."""

import math

import pytest
import torch

from dynvae.errors import ConfigError, DataError
from dynvae.gp.exact import exact_log_marginal_likelihood, exact_posterior
from dynvae.gp.kernels import Matern12, Matern32, Matern52, Periodic, QuasiPeriodic
from dynvae.gp.regression import StateSpaceGP
from tests.reference.dense_gp import sklearn_gp

DT = torch.float64


def irregular_data(T=70, D=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    t = torch.cumsum(torch.rand(T, generator=g, dtype=DT) ** 2 * 0.3 + 1e-3, 0)   # irregular
    x = torch.sin(1.7 * t)[:, None] + 0.4 * torch.randn(T, D, generator=g, dtype=DT)
    x[torch.rand(T, D, generator=g) < 0.2] = float("nan")
    x[0] = 0.3
    return t, x


def new_times():
    return torch.tensor([-1.0, 0.0, 0.55, 3.3, 7.77, 14.0, 25.0], dtype=DT)


KERNELS = {
    "matern12": lambda: Matern12(0.6, 1.4),
    "matern32": lambda: Matern32(1.2, 0.8),
    "matern52": lambda: Matern52(0.9, 1.1),
    "quasiperiodic": lambda: QuasiPeriodic(2.1, 1.2, 4.0, 0.9, order=12),
    "matern52+periodic": lambda: Matern52(3.0, 0.5) + Periodic(1.5, 1.3, 0.7, order=12),
}


def relerr(a, b):
    return float(((a - b).abs() / b.abs().clamp_min(1e-300)).max().detach())


@pytest.mark.parametrize("name", list(KERNELS))
def test_state_space_gp_equals_dense_exact_gp(name):
    t, x = irregular_data()
    kernel, noise = KERNELS[name](), 0.15
    gp = StateSpaceGP(kernel, noise_variance=noise)
    t_new = torch.cat([new_times(), t[10:13]])   # extrapolation, interpolation, training
    with torch.no_grad():
        lml = gp.log_marginal_likelihood(t, x)
        gp.set_data(t, x)
        pred = gp.predict(t_new)
        ref_lml = exact_log_marginal_likelihood(gp.kernels[0], t, x[:, 0], noise)
        ref_mean, ref_var = exact_posterior(gp.kernels[0], t, x[:, 0], noise, t_new)
    assert relerr(lml, ref_lml) < 1e-8
    torch.testing.assert_close(pred.t, t_new)        # rows follow the order of t_new
    assert relerr(pred.mean[:, 0], ref_mean) < 1e-8
    assert relerr(pred.variance[:, 0], ref_var) < 1e-8


@pytest.mark.parametrize("name", list(KERNELS))
def test_state_space_gp_equals_scikit_learn(name):
    pytest.importorskip("sklearn")
    t, x = irregular_data(seed=1)
    kernel, noise = KERNELS[name](), 0.2
    gp = StateSpaceGP(kernel, noise_variance=noise)
    t_new = new_times()
    with torch.no_grad():
        lml = gp.log_marginal_likelihood(t, x)
        gp.set_data(t, x)
        pred = gp.predict(t_new)
    ref_lml, ref_mean, ref_var = sklearn_gp(gp.kernels[0], t, x[:, 0], noise, t_new)
    assert relerr(lml, torch.tensor(ref_lml)) < 1e-8
    assert relerr(pred.mean[:, 0], torch.from_numpy(ref_mean)) < 1e-8
    assert relerr(pred.variance[:, 0], torch.from_numpy(ref_var)) < 1e-8


def test_independent_outputs_with_missing_values():
    t, x = irregular_data(T=40, D=2, seed=3)
    gp = StateSpaceGP(Matern32(1.0, 1.0), num_outputs=2, noise_variance=0.1)
    with torch.no_grad():
        gp.kernels[1].log_lengthscale.fill_(0.5)
        gp.log_noise_variance[1] = -1.0
        lml = gp.log_marginal_likelihood(t, x)
        gp.set_data(t, x)
        pred = gp.predict(new_times())
    ref = 0.0
    for d in range(2):
        noise = gp.noise_variance[d]
        ref = ref + exact_log_marginal_likelihood(gp.kernels[d], t, x[:, d], noise)
        mean, var = exact_posterior(gp.kernels[d], t, x[:, d], noise, new_times())
        assert relerr(pred.mean[:, d], mean) < 1e-8 and relerr(pred.variance[:, d], var) < 1e-8
    assert relerr(lml, ref) < 1e-8


def test_gradients_match_finite_differences():
    t, x = irregular_data(T=25, seed=4)
    gp = StateSpaceGP(Matern32(0.8, 1.2) + QuasiPeriodic(1.7, 1.1, 3.0, 0.6, order=3),
                      noise_variance=0.2)
    params = [p for p in gp.parameters()]
    grads = torch.autograd.grad(gp.log_marginal_likelihood(t, x), params)
    eps = 1e-6
    with torch.no_grad():
        for p, g in zip(params, grads, strict=True):
            for i in range(p.numel()):
                flat = p.view(-1)
                flat[i] += eps
                up = gp.log_marginal_likelihood(t, x)
                flat[i] -= 2 * eps
                down = gp.log_marginal_likelihood(t, x)
                flat[i] += eps
                fd = (up - down) / (2 * eps)
                assert abs(float(g.view(-1)[i] - fd)) < 1e-6 * max(1.0, abs(float(fd)))


def test_posterior_samples_match_smoothed_moments():
    t, x = irregular_data(T=30, seed=5)
    gp = StateSpaceGP(Matern52(0.7, 1.0), noise_variance=0.1)
    gp.set_data(t, x)
    t_new = torch.tensor([0.5, 5.0, 9.0], dtype=DT)
    with torch.no_grad():
        pred = gp.predict(t_new)
        f = gp.sample_posterior(t_new, n_samples=4000, generator=torch.Generator().manual_seed(0))
    assert f.shape == (4000, 3, 1)
    se = (pred.variance / 4000).sqrt()
    assert ((f.mean(0) - pred.mean).abs() < 4.5 * se).all()
    # sample variance within 4.5 standard errors (var * sqrt(2/K)) of the posterior variance
    assert ((f.var(0) - pred.variance).abs() < 4.5 * pred.variance * (2 / 4000) ** 0.5).all()


def test_posterior_samples_of_a_noise_free_periodic_state_match_the_smoothed_moments():
    """A periodic kernel's state is a noise-free oscillator, so FFBS's backward
    conditionals are singular to within rounding (no jitter makes Cholesky succeed):
    the draws come from the nearest PSD factor and still have the smoothed moments."""
    g = torch.Generator().manual_seed(3)
    t = torch.sort(torch.rand(120, generator=g, dtype=DT) * 10).values
    x = torch.sin(2 * math.pi * t) + 0.1 * torch.randn(120, generator=g, dtype=DT)
    gp = StateSpaceGP(Periodic(period=1.0), noise_variance=0.01)
    gp.set_data(t, x)
    t_new = torch.tensor([0.25, 4.6, 11.0], dtype=DT)
    with torch.no_grad():
        pred = gp.predict(t_new)
        f = gp.sample_posterior(t_new, n_samples=4000, generator=torch.Generator().manual_seed(0))
    assert f.shape == (4000, 3, 1) and bool(torch.isfinite(f).all())
    se = (pred.variance / 4000).sqrt()
    assert ((f.mean(0) - pred.mean).abs() < 4.5 * se).all()
    assert ((f.var(0) - pred.variance).abs() < 4.5 * pred.variance * (2 / 4000) ** 0.5
            + 1e-12).all()


def test_bad_input_gives_clear_errors():
    gp = StateSpaceGP(Matern12())
    t = torch.tensor([0.0, 1.0, 1.0], dtype=DT)
    with pytest.raises(DataError, match="strictly increasing"):
        gp.log_marginal_likelihood(t, torch.zeros(3, dtype=DT))
    t = torch.tensor([0.0, 1.0, 2.0], dtype=DT)
    with pytest.raises(DataError, match="no observed value"):
        gp.log_marginal_likelihood(t, torch.full((3,), float("nan"), dtype=DT))
    with pytest.raises(DataError, match="inf"):
        gp.log_marginal_likelihood(t, torch.tensor([0.0, float("inf"), 1.0], dtype=DT))
    with pytest.raises(DataError, match="outputs"):
        gp.log_marginal_likelihood(t, torch.zeros(3, 2, dtype=DT))
    with pytest.raises(DataError, match="call fit"):
        gp.predict(t)
    with pytest.raises(DataError, match="must be a torch tensor, got ndarray"):
        gp.fit(t.numpy(), t.numpy())
    with pytest.raises(ConfigError, match="max_iter must be a positive integer"):
        gp.fit(t, torch.zeros(3, dtype=DT), max_iter=-1)
    with pytest.raises(ConfigError, match="noise_variance must be a positive number"):
        StateSpaceGP(Matern12(), noise_variance=-0.1)
    gp.set_data(t, torch.zeros(3, dtype=DT))
    with pytest.raises(DataError, match=r"prediction times must be \(N,\)"):
        gp.predict(torch.ones(2, 3, dtype=DT))


def test_float32_data_is_read_in_the_models_dtype():
    """A float32 (t, y) gives the float64 GP's numbers (it used to fail deep inside the
    Fisher engine with a dtype mismatch)."""
    t, x = irregular_data(T=30, seed=2)
    single = StateSpaceGP(Matern52(0.7, 1.0), noise_variance=0.1)
    double = StateSpaceGP(Matern52(0.7, 1.0), noise_variance=0.1)
    t32, x32 = t.float(), x.float()
    expected = double.log_marginal_likelihood(t32.double(), x32.double())
    torch.testing.assert_close(single.log_marginal_likelihood(t32, x32), expected)
    single.fit(t32, x32, max_iter=5)
    double.fit(t32.double(), x32.double(), max_iter=5)
    torch.testing.assert_close(single.predict().mean, double.predict().mean)


def test_parallel_engine_equals_dense_exact_gp():
    from dynvae.gp.inference import ParallelKalman
    t, x = irregular_data(T=60, D=2, seed=6)
    kernel, noise = Matern52(3.0, 0.5) + QuasiPeriodic(2.1, 1.2, 4.0, 0.9, order=4), 0.15
    gp = StateSpaceGP(kernel, num_outputs=2, noise_variance=noise, engine=ParallelKalman())
    t_new = torch.cat([new_times(), t[20:22]])
    with torch.no_grad():
        lml = gp.log_marginal_likelihood(t, x)
        gp.set_data(t, x)
        pred = gp.predict(t_new)
    ref = 0.0
    for d in range(2):
        ref = ref + exact_log_marginal_likelihood(gp.kernels[d], t, x[:, d], noise)
        mean, var = exact_posterior(gp.kernels[d], t, x[:, d], noise, t_new)
        assert relerr(pred.mean[:, d], mean) < 1e-8 and relerr(pred.variance[:, d], var) < 1e-8
    assert relerr(lml, ref) < 1e-8


def test_fit_into_degenerate_variances_is_a_clear_error():
    # one observed value at 0: the marginal likelihood grows without bound as the
    # variances shrink, and the line search reaches a non-positive innovation variance
    from dynvae.gp.inference import ParallelKalman
    gp = StateSpaceGP(Matern52(0.05, 1.0), noise_variance=0.1, engine=ParallelKalman())
    with pytest.raises(DataError, match="1 observed values"):
        gp.fit(torch.tensor([1.0], dtype=DT), torch.zeros(1, dtype=DT), max_iter=100)


class _FailingBackward(torch.autograd.Function):
    """Identity whose backward raises as a failed Cholesky factor does."""

    @staticmethod
    def forward(ctx, value):
        return value.clone()

    @staticmethod
    def backward(ctx, grad):
        raise torch.linalg.LinAlgError("linalg.cholesky: The factorization could not be "
                                       "completed (raised in a backward pass)")


def test_a_backward_pass_that_fails_rejects_the_trial_point(monkeypatch):
    """An engine whose gradient fails at a trial point of the line search (found on the
    README's CO2 fit: a Cholesky factor in the analytic backward pass) rejects that
    point like a failed forward pass: the fit goes on and ends where an undisturbed fit
    ends."""
    t, x = irregular_data()

    def fitted(fail_at):
        gp = StateSpaceGP(Matern32(1.2, 0.8), noise_variance=0.3)
        real = gp.log_marginal_likelihood
        count = {"n": 0}

        def patched(t_, x_):
            count["n"] += 1
            lml = real(t_, x_)
            return _FailingBackward.apply(lml) if count["n"] in fail_at else lml
        monkeypatch.setattr(gp, "log_marginal_likelihood", patched)
        return gp, gp.fit(t, x, max_iter=200)
    gp_ref, ref = fitted(fail_at=())
    gp, fit = fitted(fail_at=(3,))        # the third evaluation: a line search's trial
    assert math.isfinite(fit.log_marginal_likelihood)
    assert fit.log_marginal_likelihood == pytest.approx(ref.log_marginal_likelihood, abs=1e-6)
    for key, value in gp_ref.hyperparameters().items():
        assert float(gp.hyperparameters()[key]) == pytest.approx(float(value), rel=1e-3), key
