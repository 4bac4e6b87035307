"""Monte-Carlo moments against exact moments, within standard errors."""

import math

import pytest
import torch

from dynvae.sde import SRK, EulerMaruyama, Milstein, sdeint
from dynvae.sde.linear import LinearSDE
from dynvae.sde.processes import (
    BrownianBridge,
    CoxIngersollRoss,
    DoubleWell,
    GeometricBrownianMotion,
    LinearProcess,
    OrnsteinUhlenbeck,
    StochasticLorenz,
    stochastic_lorenz_dataset,
)

F64 = torch.float64
N = 20000
K_SE = 4.0


def _check_moments(samples, mean, var):
    """samples (N, T, Z); mean/var broadcastable to (T, Z): within K_SE standard errors."""
    n = samples.shape[0]
    m_hat, v_hat = samples.mean(0), samples.var(0)
    assert ((m_hat - mean).abs() <= K_SE * (var / n).sqrt() + 1e-12).all(), (m_hat, mean)
    # Var of the sample variance: (mu4 - var^2 (n-3)/(n-1)) / n, with mu4 estimated.
    mu4 = ((samples - m_hat) ** 4).mean(0)
    se_v = ((mu4 - v_hat ** 2 * (n - 3) / (n - 1)) / n).sqrt()
    assert ((v_hat - var).abs() <= K_SE * se_v + 1e-12).all(), (v_hat, var)


@pytest.mark.parametrize("solver, dt", [(EulerMaruyama(), 2e-3), (SRK(), 0.05)], ids=repr)
def test_ou_weak_moments(solver, dt):
    ou = OrnsteinUhlenbeck(theta=1.5, mu=0.5, sigma=0.8)
    t = torch.tensor([0.0, 0.5, 1.0], dtype=F64)
    z0 = torch.full((N, 1), 2.0, dtype=F64)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        z = sdeint(ou, z0, t, solver=solver, dt=dt, generator=gen).z
    _check_moments(z, ou.mean(z0[:1], t)[0], ou.variance(t).unsqueeze(-1))


def test_ou_exact_sampler_moments():
    ou = OrnsteinUhlenbeck(theta=0.7, mu=-1.0, sigma=1.3)
    t = torch.tensor([0.0, 0.3, 2.0], dtype=F64)
    z0 = torch.zeros(N, 2, dtype=F64)
    z = ou.sample(z0, t, generator=torch.Generator().manual_seed(1))
    _check_moments(z, ou.mean(z0[:1], t)[0], ou.variance(t).unsqueeze(-1))


def test_gbm_cir_bridge_moments():
    gen = torch.Generator().manual_seed(2)
    t = torch.tensor([0.0, 0.4, 0.8], dtype=F64)
    gbm = GeometricBrownianMotion(mu=0.2, sigma=0.4)
    z0 = torch.full((N, 1), 1.0, dtype=F64)
    with torch.no_grad():
        z = sdeint(gbm, z0, t, solver=Milstein(), dt=1e-2, generator=gen).z
    _check_moments(z, gbm.mean(z0[:1], t)[0], gbm.variance(z0[:1], t)[0])
    cir = CoxIngersollRoss(kappa=2.0, theta=1.0, sigma=0.5)
    assert cir.feller
    with torch.no_grad():
        z = sdeint(cir, z0, t, solver=Milstein(), dt=1e-2, generator=gen).z
    _check_moments(z, cir.mean(z0[:1], t)[0], cir.variance(z0[:1], t)[0])
    bridge = BrownianBridge(end=2.0, t_end=1.0, sigma=0.7)
    with torch.no_grad():
        # Euler-Maruyama's variance bias near the pinned end is ~4 standard errors at
        # dt = 1e-2 (t = 0.8) and below one at dt = 2e-3.
        z = sdeint(bridge, torch.zeros(N, 1, dtype=F64), t, dt=2e-3, generator=gen).z
    _check_moments(z, bridge.mean(torch.zeros(1, 1, dtype=F64), t)[0],
                   bridge.variance(t).unsqueeze(-1))


def test_double_well_reaches_its_gibbs_density():
    dw = DoubleWell(sigma=0.8)
    gen = torch.Generator().manual_seed(3)
    z0 = torch.randn(4000, 1, dtype=F64, generator=gen)
    with torch.no_grad():
        z = sdeint(dw, z0, torch.tensor([0.0, 15.0], dtype=F64), solver=SRK(), dt=0.02,
                   generator=gen).z[:, -1, 0]
    grid = torch.linspace(-3, 3, 6001, dtype=F64)
    p = dw.stationary_log_density(grid).exp()
    p = p / torch.trapezoid(p, grid)
    exact_m2 = torch.trapezoid(grid ** 2 * p, grid)
    m2 = (z ** 2).mean()
    se = (z ** 2).std() / math.sqrt(z.numel())
    assert (m2 - exact_m2).abs() < K_SE * se, (m2, exact_m2)


def test_stochastic_lorenz_dataset_shapes_and_seeding():
    t, x = stochastic_lorenz_dataset(8, seed=0)
    assert t.shape == (100,) and x.shape == (8, 100, 3) and x.dtype == torch.float32
    assert float(t[0]) == 0.0 and abs(float(t[-1]) - 2.0) < 1e-6
    assert torch.isfinite(x).all()
    _, x2 = stochastic_lorenz_dataset(8, seed=0)
    _, x3 = stochastic_lorenz_dataset(8, seed=1)
    assert torch.equal(x, x2) and not torch.equal(x, x3)
    assert StochasticLorenz().diffusion(t[0], x[:, 0]).shape == (8, 3)


def test_linear_sde_moments_shared_with_the_gp_code():
    # Matern-3/2 state-space form (lengthscale 0.5): simulate with SRK, compare the
    # Monte-Carlo mean and covariance to LinearSDE.moments (Van Loan, exact).
    lam = 3 ** 0.5 / 0.5
    F = torch.tensor([[0.0, 1.0], [-lam ** 2, -2 * lam]], dtype=F64)
    L = torch.tensor([[0.0], [1.0]], dtype=F64)
    Qc = torch.tensor([[4 * lam ** 3]], dtype=F64)
    proc = LinearProcess(LinearSDE(F, L, Qc))
    t = torch.tensor([0.0, 0.2, 0.7], dtype=F64)
    m0 = torch.tensor([1.0, -0.5], dtype=F64)
    gen = torch.Generator().manual_seed(4)
    with torch.no_grad():
        z = sdeint(proc, m0.expand(N, 2), t, solver=SRK(), dt=0.01, generator=gen).z
    mean, cov = proc.linear.moments(m0, torch.zeros(2, 2, dtype=F64), t)
    var = torch.diagonal(cov, dim1=-2, dim2=-1)
    _check_moments(z[:, 1:], mean[1:], var[1:])
    zc = z[:, 1:] - z[:, 1:].mean(0)
    cross = (zc[..., 0] * zc[..., 1]).mean(0)  # off-diagonal covariance
    se = ((zc[..., 0] * zc[..., 1]).var(0) / N).sqrt()
    assert ((cross - cov[1:, 0, 1]).abs() < K_SE * se).all(), (cross, cov[1:, 0, 1])
