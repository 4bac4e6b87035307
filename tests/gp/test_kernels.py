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


def test_spec_arguments_several_periods_and_round_trip():
    from dynvae.gp.kernels.registry import count_periodic, kernel_spec
    k = parse_kernel("matern52(30) + periodic(24) + periodic(168, lengthscale=0.5, order=2)")
    hp = k.hyperparameters()
    assert hp["kernels.0.lengthscale"] == pytest.approx(30.0)
    assert hp["kernels.1.period"] == pytest.approx(24.0)
    assert hp["kernels.2.period"] == pytest.approx(168.0)
    assert hp["kernels.2.lengthscale"] == pytest.approx(0.5)       # the cycle's, not Matern's
    assert k.kernels[2].order == 2 and k.state_dim == 3 + 13 + 5     # orders 6 (default), 2
    # periodic parts without a period take KernelInit.periods in order, then .period
    k = parse_kernel("periodic + matern32 * periodic + quasiperiodic(decay=9) + periodic(5)",
                     KernelInit(periods=(1.0, 7.0), period=30.0, order=3))
    assert count_periodic("periodic + matern32 * periodic + quasiperiodic + periodic(5)") == 3
    periods = [v for name, v in k.hyperparameters().items() if name.endswith("period")]
    assert periods == pytest.approx([1.0, 7.0, 30.0, 5.0])
    assert k.kernels[2].hyperparameters()["left.lengthscale"] == pytest.approx(9.0)
    # a fitted kernel's spec rebuilds the same kernel
    spec = kernel_spec(k)
    assert kernel_spec(parse_kernel(spec)) == spec
    torch.testing.assert_close(parse_kernel(spec).covariance(torch.arange(5.0, dtype=DT),
                                                             torch.arange(5.0, dtype=DT)),
                               k.covariance(torch.arange(5.0, dtype=DT),
                                            torch.arange(5.0, dtype=DT)).detach(),
                               rtol=1e-5, atol=1e-8)            # 6 significant digits


@pytest.mark.parametrize("spec, message", [
    ("", "empty"), ("matern52(", "unbalanced"), ("matern52)", "unbalanced"),
    ("periodic(x)", "not a number"), ("periodic(-1)", "positive"), ("periodic(1, 2)", "positional"),
    ("matern32(decay=2)", "no hyperparameter 'decay'"), ("matern52+", "cannot read"),
    ("periodic(order=1.5)", "integer"), ("rbf(2)", "unknown kernel"),
])
def test_spec_errors_are_one_clear_message(spec, message):
    with pytest.raises(ConfigError, match=message):
        parse_kernel(spec)


@pytest.mark.parametrize("name", list(all_kernels()))
def test_structured_discretisation_equals_dense_formula(name):
    """Sums (blocks) and products (Kronecker) against A = expm(F dt), Q = Pinf - A Pinf A^T
    on the whole state; the periodic kernel's Q is exactly zero."""
    k = all_kernels()[name]
    F, _, _, _, Pinf = k.state_space()
    dt = torch.tensor([0.0, 1e-3, 0.3, 2.0, 40.0], dtype=DT)
    A_ref = torch.linalg.matrix_exp(F * dt[:, None, None])
    Q_ref = Pinf - A_ref @ Pinf @ A_ref.transpose(-1, -2)
    A, Q = k.discretize(dt)
    torch.testing.assert_close(A, A_ref, rtol=1e-10, atol=1e-11)
    torch.testing.assert_close(Q, Q_ref, rtol=1e-9, atol=1e-10 * float(Pinf.abs().max()))
    assert torch.equal(Q, Q.transpose(-1, -2))
    if name == "periodic":
        assert bool((Q == 0).all())


def test_periodic_state_has_one_constant_coordinate():
    k = Periodic(1.3, 0.8, 1.2, order=4)
    assert k.state_dim == 9
    F, _, _, H, Pinf = k.state_space()
    assert H[0].tolist() == [1.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0]
    assert bool((F[0] == 0).all()) and float(Pinf[0, 0]) == pytest.approx(
        float(k.coefficients()[0]))
