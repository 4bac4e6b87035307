"""FisherKalman engine: native C value + Fisher-identity gradient, against autograd
through the parallel (associative-scan) Kalman engine on identical inputs, float64."""

import pytest
import torch

from dynvae.errors import ConfigError
from dynvae.gp import ENGINES, ConstantMean, FisherKalman, ParallelKalman, StateSpaceGP
from dynvae.gp.kernels import Matern12, Matern32, Matern52, Periodic, QuasiPeriodic
from dynvae.ssm import native

DT = torch.float64
pytestmark = pytest.mark.skipif(not native.native_available(), reason="no C compiler")

KERNELS = {
    "matern12": lambda: Matern12(0.6, 1.4),
    "matern32": lambda: Matern32(1.2, 0.8),
    "matern52": lambda: Matern52(0.9, 1.1),
    "periodic": lambda: Periodic(1.7, 1.1, 0.9, order=6),
    "quasiperiodic": lambda: QuasiPeriodic(2.1, 1.2, 4.0, 0.9, order=6),
    "matern52+periodic": lambda: Matern52(3.0, 0.5) + Periodic(1.5, 1.3, 0.7, order=6),
}


def irregular_data(T=150, D=2, seed=0):
    """Irregular steps from 1e-3 up (ill-conditioned Q_t), 20% missing, partly observed rows."""
    g = torch.Generator().manual_seed(seed)
    t = torch.cumsum(torch.rand(T, generator=g, dtype=DT) ** 2 * 0.3 + 1e-3, 0)
    x = torch.sin(1.7 * t)[:, None] + 0.4 * torch.randn(T, D, generator=g, dtype=DT)
    x[torch.rand(T, D, generator=g) < 0.2] = float("nan")
    x[0] = 0.3
    return t, x


def value_and_grad(kernel, engine, t, x, mean=None):
    gp = StateSpaceGP(kernel, num_outputs=x.shape[1], noise_variance=0.2, engine=engine,
                      mean=mean)
    if mean is not None:
        gp.initialize_mean(t, x)
    params = [p for p in gp.parameters() if p.requires_grad]
    lml = gp.log_marginal_likelihood(t, x)
    grads = torch.autograd.grad(lml, params)
    return lml.detach(), torch.cat([g.flatten() for g in grads])


@pytest.mark.parametrize("name", sorted(KERNELS))
def test_value_and_gradient_match_parallel_engine(name):
    t, x = irregular_data()
    l_ref, g_ref = value_and_grad(KERNELS[name](), ParallelKalman(), t, x)
    l_fk, g_fk = value_and_grad(KERNELS[name](), FisherKalman(), t, x)
    assert float((l_fk - l_ref).abs() / l_ref.abs()) < 1e-10
    assert g_ref.abs().min() > 0       # every hyperparameter has a non-trivial gradient
    rel = float(((g_fk - g_ref).abs() / g_ref.abs()).max())
    assert rel < 1e-9, rel


def test_gradient_through_prior_mean_and_observations():
    """The mean's parameters reach the likelihood through the observations x - m(t)."""
    t, x = irregular_data(T=80, D=1, seed=3)
    l_ref, g_ref = value_and_grad(Matern32(0.7, 1.0), ParallelKalman(), t, x, ConstantMean())
    l_fk, g_fk = value_and_grad(Matern32(0.7, 1.0), FisherKalman(), t, x, ConstantMean())
    assert float((l_fk - l_ref).abs() / l_ref.abs()) < 1e-10
    torch.testing.assert_close(g_fk, g_ref, rtol=1e-8, atol=1e-10)


def test_posterior_and_registry():
    t, x = irregular_data(T=60, D=1, seed=1)
    a = StateSpaceGP(Matern52(0.9, 1.1), engine=ParallelKalman())
    b = StateSpaceGP(Matern52(0.9, 1.1), engine=ENGINES["fisher"]())
    a.set_data(t, x)
    b.set_data(t, x)
    tn = torch.tensor([-0.5, 1.234, 30.0], dtype=DT)
    pa, pb = a.predict(tn), b.predict(tn)
    torch.testing.assert_close(pb.mean, pa.mean, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(pb.variance, pa.variance, rtol=1e-9, atol=1e-12)


def test_fit_reaches_the_parallel_engines_optimum():
    t, x = irregular_data(T=120, D=1, seed=2)
    fits = []
    for engine in (ParallelKalman(), FisherKalman()):
        gp = StateSpaceGP(Matern32(0.5, 1.0), noise_variance=0.3, engine=engine)
        res = gp.fit(t, x, max_iter=200)
        fits.append((res.log_marginal_likelihood, gp.hyperparameters()))
    (l_a, h_a), (l_b, h_b) = fits
    assert abs(l_a - l_b) < 1e-7 * abs(l_a)
    for k in h_a:
        assert h_b[k] == pytest.approx(h_a[k], rel=1e-4), k


def test_unavailable_native_backend_is_a_config_error(monkeypatch):
    monkeypatch.setattr(native, "native_available", lambda: False)
    with pytest.raises(ConfigError, match="native C back end"):
        FisherKalman()
