"""State-space kernels: Lyapunov identity, covariance identity, closed-form transitions,
periodic truncation error, Bessel coefficients against scipy, parser."""

import math

import pytest
import torch

from dynvae.errors import ConfigError
from dynvae.gp.kernels import (
    KERNELS,
    KernelInit,
    Matern12,
    Matern32,
    Matern52,
    Periodic,
    Product,
    QuasiPeriodic,
    Sum,
    parse_kernel,
)
from dynvae.gp.kernels.periodic import scaled_bessel_i
from dynvae.sde.linear import solve_lyapunov

DT = torch.float64


def all_kernels():
    return {
        "matern12": Matern12(0.7, 1.3),
        "matern32": Matern32(1.9, 0.6),
        "matern52": Matern52(0.45, 2.1),
        "periodic": Periodic(1.3, 0.8, 1.2, order=5),
        "quasiperiodic": QuasiPeriodic(1.1, 0.9, 3.0, 1.4, order=4),
        "sum": Matern32(0.5, 0.7) + Periodic(2.0, 1.5, 0.3, order=3),
        "product": Matern12(2.0, 1.1) * Matern52(0.8, 0.9),
        "nested": parse_kernel("matern52+quasiperiodic*matern12+periodic",
                               KernelInit(lengthscale=1.7, period=0.9, order=3)),
    }


@pytest.mark.parametrize("name", list(all_kernels()))
def test_lyapunov_identity_and_stationary_covariance(name):
    k = all_kernels()[name]
    F, L, Qc, H, Pinf = k.state_space()
    resid = F @ Pinf + Pinf @ F.T + L @ Qc @ L.T
    assert resid.abs().max() <= 1e-12 * (L @ Qc @ L.T).abs().max().clamp_min(Pinf.abs().max())
    assert torch.allclose(Pinf, Pinf.T)
    assert torch.linalg.eigvalsh(Pinf).min() > -1e-12


@pytest.mark.parametrize("name", list(all_kernels()))
def test_state_space_covariance_equals_kernel(name):
    k = all_kernels()[name]
    F, _, _, H, Pinf = k.state_space()
    lags = torch.tensor([0.0, 0.05, 0.3, 1.1, 2.7, 6.0], dtype=DT)
    ss = torch.stack([(H @ torch.linalg.matrix_exp(F * d) @ Pinf @ H.T)[0, 0] for d in lags])
    torch.testing.assert_close(ss, k.stationary_covariance(lags), rtol=1e-11, atol=1e-13)
    # symmetric Gram matrix from the dense covariance function
    t = torch.tensor([0.3, -1.0, 2.5], dtype=DT)
    G = k.covariance(t, t)
    torch.testing.assert_close(G, G.T)


@pytest.mark.parametrize("name", list(all_kernels()))
def test_closed_form_transition_equals_matrix_exponential(name):
    k = all_kernels()[name]
    F = k.state_space().F
    dt = torch.tensor([[0.0, 0.01], [0.7, 3.2]], dtype=DT)               # batched steps
    A = k.transition_matrix(dt)
    assert A.shape == (2, 2, k.state_dim, k.state_dim)
    torch.testing.assert_close(A, torch.linalg.matrix_exp(F * dt[..., None, None]),
                               rtol=1e-11, atol=1e-12)


@pytest.mark.parametrize("kernel", [Matern12(0.7, 1.3), Matern32(1.9, 0.6), Matern52(0.45, 2.1)])
def test_matern_stationary_cov_equals_lyapunov_solution(kernel):
    F, L, Qc, _, Pinf = kernel.state_space()
    torch.testing.assert_close(solve_lyapunov(F, L @ Qc @ L.T), Pinf, rtol=1e-10, atol=1e-12)


def test_matern_matches_scikit_learn_kernels():
    sk = pytest.importorskip("sklearn.gaussian_process.kernels")
    t = torch.linspace(0, 3, 17, dtype=DT)
    for cls, nu in ((Matern12, 0.5), (Matern32, 1.5), (Matern52, 2.5)):
        k = cls(0.8, 1.7)
        ref = 1.7 * sk.Matern(length_scale=0.8, nu=nu)(t[:, None].numpy())
        torch.testing.assert_close(k.covariance(t, t).detach(), torch.from_numpy(ref),
                                   rtol=1e-12, atol=1e-14)
    per = Periodic(1.3, 0.6, order=3)
    ref = sk.ExpSineSquared(length_scale=0.6, periodicity=1.3)(t[:, None].numpy())
    tau = t[:, None] - t[None, :]
    torch.testing.assert_close(per.exact_covariance(tau).detach(), torch.from_numpy(ref))


def test_scaled_bessel_matches_scipy():
    special = pytest.importorskip("scipy.special")
    for z in (1e-3, 0.4, 2.0, 11.0, 150.0, 999.0, 1001.0, 1e5):   # series, then asymptotic
        got = scaled_bessel_i(8, torch.tensor(z, dtype=DT))
        ref = torch.tensor([special.ive(j, z) for j in range(9)], dtype=DT)
        torch.testing.assert_close(got, ref, rtol=1e-11, atol=1e-300)


def test_periodic_approximation_error_falls_with_order():
    tau = torch.linspace(-3, 3, 301, dtype=DT)
    errors = []
    for order in (1, 2, 4, 6, 8, 12):
        k = Periodic(1.0, 0.7, order=order)
        with torch.no_grad():
            err = (k.stationary_covariance(tau) - k.exact_covariance(tau)).abs().max()
        errors.append(float(err))
    assert all(b < a for a, b in zip(errors, errors[1:], strict=False))
    assert errors[0] > 1e-2 and errors[-1] < 1e-9


def test_composition_operators_and_hyperparameters():
    k = Matern32() + Matern12() + Periodic()
    assert isinstance(k, Sum) and len(k.kernels) == 3
    p = Matern32() * Periodic(order=2)
    assert isinstance(p, Product) and p.state_dim == 2 * 5
    qp = QuasiPeriodic(period=2.0, lengthscale=0.5, decay_lengthscale=7.0, variance=3.0)
    hp = qp.hyperparameters()
    assert hp["left.lengthscale"] == pytest.approx(7.0)
    assert hp["left.variance"] == pytest.approx(3.0)
    assert hp["right.period"] == pytest.approx(2.0)
    assert hp["right.variance"] == pytest.approx(1.0)      # fixed, not learnable
    names = {n for n, _ in QuasiPeriodic().named_parameters()}
    assert "right.log_variance" not in names and "left.log_variance" in names


def test_parser_registry_and_errors():
    k = parse_kernel("matern52 + quasiperiodic", KernelInit(period=3.0))
    assert isinstance(k, Sum) and isinstance(k.kernels[1], QuasiPeriodic)
    assert float(k.kernels[1].right.period) == pytest.approx(3.0)
    assert set(KERNELS) >= {"matern12", "matern32", "matern52", "periodic", "quasiperiodic"}
    with pytest.raises(ConfigError, match="unknown kernel 'rbf'"):
        parse_kernel("matern32+rbf")
    with pytest.raises(ConfigError, match="lengthscale must be positive"):
        Matern32(lengthscale=-1.0)
    with pytest.raises(ConfigError, match="order"):
        Periodic(order=0)
    assert math.isclose(Matern52(2.0).hyperparameters()["lengthscale"], 2.0)
