"""dynvae.sde.linear against independent computations: ODE integration of the moment
equations, the Lyapunov equation, the kernel discretisation, Monte Carlo of exact samples."""

import pytest
import torch

from dynvae.errors import DataError
from dynvae.gp.discretize import discretize
from dynvae.gp.kernels import Matern32, QuasiPeriodic
from dynvae.sde.linear import LinearSDE, solve_lyapunov, van_loan

DT = torch.float64


def random_stable_sde(S=3, W=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    M = torch.randn(S, S, generator=g, dtype=DT)
    F = M - (torch.linalg.eigvals(M).real.max() + 0.7) * torch.eye(S, dtype=DT)   # stable
    Lq = torch.randn(W, W, generator=g, dtype=DT)
    return LinearSDE(F, torch.randn(S, W, generator=g, dtype=DT), Lq @ Lq.T + 0.2 * torch.eye(W, dtype=DT))


def rk4(rhs, y, t_end, n=4000):
    h = t_end / n
    for _ in range(n):
        k1 = rhs(y)
        k2 = rhs(y + 0.5 * h * k1)
        k3 = rhs(y + 0.5 * h * k2)
        k4 = rhs(y + h * k3)
        y = y + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    return y


def test_closed_form_moments_equal_integrated_moment_odes():
    sde = random_stable_sde()
    m0 = torch.tensor([1.0, -2.0, 0.5], dtype=DT)
    P0 = torch.diag(torch.tensor([0.3, 1.0, 2.0], dtype=DT))
    t = torch.tensor([0.4, 1.3], dtype=DT)
    mean, cov = sde.moments(m0, P0, t)
    for i, ti in enumerate(t):
        torch.testing.assert_close(mean[i], rk4(sde.mean_ode, m0, float(ti)), rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(cov[i], rk4(sde.cov_ode, P0, float(ti)), rtol=1e-10, atol=1e-12)


def test_lyapunov_solution_and_stationary_van_loan():
    sde = random_stable_sde(S=4, W=3, seed=1)
    Pinf = sde.stationary_cov()
    torch.testing.assert_close(sde.drift @ Pinf + Pinf @ sde.drift.T + sde.noise_cov(),
                               torch.zeros(4, 4, dtype=DT), atol=1e-12, rtol=0)
    dt = torch.tensor([0.0, 0.1, 0.9, 3.0], dtype=DT)
    A, Q = sde.transition(dt)
    torch.testing.assert_close(Q, Pinf - A @ Pinf @ A.transpose(-1, -2), rtol=1e-10, atol=1e-12)
    # stationarity: the covariance ODE vanishes at Pinf
    torch.testing.assert_close(sde.cov_ode(Pinf), torch.zeros(4, 4, dtype=DT), atol=1e-12, rtol=0)
    # batched Lyapunov solve
    batch = solve_lyapunov(torch.stack([sde.drift, 2 * sde.drift]),
                           torch.stack([sde.noise_cov(), sde.noise_cov()]))
    torch.testing.assert_close(batch[1], Pinf / 2)


@pytest.mark.parametrize("kernel", [Matern32(0.8, 1.5), QuasiPeriodic(1.3, 0.9, 2.0, 1.0, order=3)])
def test_van_loan_equals_kernel_discretisation(kernel):
    ss = kernel.state_space()
    dt = torch.tensor([0.01, 0.4, 2.5], dtype=DT)
    A, Q = van_loan(ss.F, ss.L @ ss.Qc @ ss.L.T, dt)
    A2, Q2 = discretize(kernel, dt)
    torch.testing.assert_close(A, A2, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(Q, Q2, rtol=1e-9, atol=1e-11)
    assert torch.equal(Q2, Q2.transpose(-1, -2))


def test_exact_samples_have_the_kernel_covariance_on_irregular_grid():
    k = Matern32(0.7, 1.3)
    sde, ss = k.sde(), k.state_space()
    t = torch.tensor([0.0, 0.05, 0.4, 0.45, 1.6], dtype=DT)
    n = 20000
    g = torch.Generator().manual_seed(1)
    z0 = torch.linalg.cholesky(ss.Pinf) @ torch.randn(2, n, generator=g, dtype=DT)
    paths = sde.sample(t, z0.T, generator=g)                     # (1, n, T, S)
    f = paths[0, ..., 0]                                          # (n, T)
    emp = f.T @ f / n
    ref = k.covariance(t, t).detach()
    se = (ref.diagonal()[:, None] * ref.diagonal()[None, :] + ref ** 2).sqrt() / n ** 0.5
    assert ((emp - ref).abs() < 4.5 * se).all()


def test_linear_sde_validation():
    F = torch.zeros(2, 2, dtype=DT)
    with pytest.raises(DataError, match="dispersion"):
        LinearSDE(F, torch.zeros(3, 1, dtype=DT), torch.ones(1, 1, dtype=DT))
    with pytest.raises(DataError, match="diffusion"):
        LinearSDE(F, torch.zeros(2, 1, dtype=DT), torch.ones(2, 2, dtype=DT))
    sde = LinearSDE(-torch.eye(2, dtype=DT), torch.eye(2, dtype=DT), torch.eye(2, dtype=DT))
    with pytest.raises(DataError, match="strictly increasing"):
        sde.sample(torch.tensor([0.0, 1.0, 0.5], dtype=DT), torch.zeros(2, dtype=DT))
