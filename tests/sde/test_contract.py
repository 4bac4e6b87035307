"""Solver/SDE compatibility, shape contract, bad input, gradients, running costs,
Ito-Stratonovich conversion and Ito's lemma."""

import math

import pytest
import torch

from dynvae.errors import ConfigError, DataError
from dynvae.sde import (
    SDE,
    SRK,
    BrownianPath,
    Compiled,
    EulerHeun,
    EulerMaruyama,
    Heun,
    Milstein,
    NoiseType,
    SDEType,
    SDEWithRunningCost,
    ito_correction,
    ito_lemma,
    sdeint,
    to_ito,
    to_stratonovich,
)
from dynvae.sde.processes import GeometricBrownianMotion, OrnsteinUhlenbeck

F64 = torch.float64


class GeneralNoise(SDE):
    noise = NoiseType.GENERAL

    def drift(self, t, z):
        return -z

    def diffusion(self, t, z):
        return torch.stack([z, torch.ones_like(z)], dim=-1) * 0.3  # (B, Z, 2)


class BadShape(SDE):
    def drift(self, t, z):
        return z[:, :1]

    def diffusion(self, t, z):
        return z


def test_solvers_declare_and_check_compatibility():
    assert (EulerMaruyama.strong_order, Milstein.strong_order, SRK.strong_order) == (0.5, 1.0, 1.5)
    assert EulerMaruyama().strong_order_for(NoiseType.ADDITIVE) == 1.0
    z0, t = torch.ones(2, 2, dtype=F64), torch.linspace(0, 1, 3, dtype=F64)
    with pytest.raises(ConfigError, match="Milstein supports noise types"):
        sdeint(GeneralNoise(), z0, t, solver=Milstein())
    with pytest.raises(ConfigError, match="SRK supports noise types"):
        sdeint(GeometricBrownianMotion(), z0, t, solver=SRK())
    with pytest.raises(ConfigError, match="integrates stratonovich"):
        sdeint(GeometricBrownianMotion(), z0, t, solver=Heun())
    with pytest.raises(ConfigError, match="to_ito"):
        sdeint(to_stratonovich(GeometricBrownianMotion()), z0, t, solver=EulerMaruyama())
    # Additive noise: Ito and Stratonovich coincide, so Heun accepts an Ito OU.
    assert sdeint(OrnsteinUhlenbeck(), z0, t, solver=Heun(), dt=0.1).z.shape == (2, 3, 2)
    assert sdeint(GeneralNoise(), z0, t, dt=0.1).z.shape == (2, 3, 2)


def test_contract_and_input_errors():
    z0, t = torch.ones(2, 2, dtype=F64), torch.linspace(0, 1, 3, dtype=F64)
    with pytest.raises(DataError, match=r"drift must return shape \(2, 2\), got \(2, 1\)"):
        sdeint(BadShape(), z0, t)
    with pytest.raises(DataError, match="strictly increasing"):
        sdeint(OrnsteinUhlenbeck(), z0, t.flip(0))
    with pytest.raises(DataError, match="NaN or inf"):
        sdeint(OrnsteinUhlenbeck(), z0 * math.nan, t)
    with pytest.raises(DataError, match=r"\(T,\) or \(\*batch, T\)"):
        sdeint(OrnsteinUhlenbeck(), z0, torch.zeros(3, 3, dtype=F64))
    with pytest.raises(ConfigError, match="dt must be"):
        sdeint(OrnsteinUhlenbeck(), z0, t, dt=-1.0)
    with pytest.raises(DataError, match="bm must be a BrownianMotion of shape"):
        sdeint(OrnsteinUhlenbeck(), z0, t, bm=BrownianPath(0, 1, (3, 2)))


class ParamGBM(SDE):
    noise = NoiseType.DIAGONAL

    def __init__(self, mu, sigma):
        self.mu, self.sigma = mu, sigma

    def drift(self, t, z):
        return self.mu * torch.tanh(z)

    def diffusion(self, t, z):
        return self.sigma * torch.sigmoid(z)


@pytest.mark.parametrize("solver", [EulerMaruyama(), Milstein(), Milstein(derivative_free=True)],
                         ids=repr)
def test_gradients_match_finite_differences(solver):
    bm = BrownianPath(0, 1, (3, 2), seed=0)
    t = torch.tensor([0.0, 0.5, 1.0], dtype=F64)

    def f(z0, mu, sigma):
        return sdeint(ParamGBM(mu, sigma), z0, t, solver=solver, dt=0.1, bm=bm).z

    inputs = (torch.randn(3, 2, dtype=F64, requires_grad=True),
              torch.tensor(0.4, dtype=F64, requires_grad=True),
              torch.tensor(0.7, dtype=F64, requires_grad=True))
    assert torch.autograd.gradcheck(f, inputs)


class OUWithCost(SDEWithRunningCost):
    noise = NoiseType.ADDITIVE

    def drift(self, t, z):
        return torch.zeros_like(z)

    def diffusion(self, t, z):
        return torch.zeros(*z.shape, 1, dtype=z.dtype)

    def running_cost(self, t, z):  # (B, 2): integrates to (t - t0, (t^3 - t0^3) / 3)
        tt = (t * torch.ones_like(z[:, :1]))[:, 0]  # t is 0-dim or (B, 1)
        return torch.stack([torch.ones_like(tt), tt ** 2], -1)


@pytest.mark.parametrize("solver, tol", [(EulerMaruyama(), 2e-2), (Heun(), 2e-4),
                                         (SRK(), 2e-4)], ids=repr)
def test_running_cost_is_integrated_with_the_solver_weights(solver, tol):
    t = torch.tensor([[0.0, 0.5, 1.0], [0.2, 0.3, 1.2]], dtype=F64)
    sol = sdeint(OUWithCost(), torch.zeros(2, 1, dtype=F64), t, solver=solver, dt=0.01)
    torch.testing.assert_close(sol.running_cost[..., 0], t - t[:, :1], rtol=0, atol=1e-12)
    torch.testing.assert_close(sol.running_cost[..., 1], (t ** 3 - t[:, :1] ** 3) / 3,
                               rtol=0, atol=tol)


def test_ito_stratonovich_conversion_and_ito_lemma():
    gbm = GeometricBrownianMotion(mu=0.3, sigma=0.6)
    z = torch.rand(5, 2, dtype=F64) + 0.5
    t0 = torch.zeros((), dtype=F64)
    torch.testing.assert_close(ito_correction(gbm, t0, z), 0.5 * 0.36 * z)
    strat = to_stratonovich(gbm)
    assert strat.sde_type is SDEType.STRATONOVICH and to_ito(strat).sde_type is SDEType.ITO
    torch.testing.assert_close(strat.drift(t0, z), (0.3 - 0.18) * z)
    torch.testing.assert_close(to_ito(strat).drift(t0, z), gbm.drift(t0, z))
    torch.testing.assert_close(ito_correction(GeneralNoise(), t0, z), 0.5 * 0.09 * z)
    # d log z = (mu - sigma^2/2) dt + sigma dW for each coordinate of a GBM.
    drift, diffusion = ito_lemma(lambda t, x: torch.log(x[:, 0]), gbm, t0, z)
    torch.testing.assert_close(drift, torch.full((5,), 0.3 - 0.18, dtype=F64))
    torch.testing.assert_close(diffusion, torch.tensor([[0.6, 0.0]], dtype=F64).expand(5, 2))
    # Time-dependent phi on OU: d(e^{theta t} z) = e^{theta t} theta mu dt + e^{theta t} s dW.
    ou = OrnsteinUhlenbeck(theta=1.2, mu=0.4, sigma=0.5)
    t1 = torch.tensor(0.7, dtype=F64)
    drift, diffusion = ito_lemma(lambda t, x: torch.exp(1.2 * t[:, 0]) * x[:, 1], ou, t1, z)
    torch.testing.assert_close(drift, torch.full((5,), math.exp(0.84) * 1.2 * 0.4, dtype=F64))
    torch.testing.assert_close(diffusion[:, 1], torch.full((5,), math.exp(0.84) * 0.5,
                                                           dtype=F64))


def test_stratonovich_solvers_reach_the_same_gbm_in_law():
    # Heun on the Stratonovich form and EM on the Ito form share one Brownian path.
    gbm = GeometricBrownianMotion(mu=0.2, sigma=0.5)
    bm = BrownianPath(0, 1, (200, 1), seed=9)
    t = torch.tensor([0.0, 1.0], dtype=F64)
    z0 = torch.ones(200, 1, dtype=F64)
    a = sdeint(to_stratonovich(gbm), z0, t, solver=EulerHeun(), dt=2 ** -10, bm=bm).z
    b = sdeint(gbm, z0, t, solver=Milstein(), dt=2 ** -10, bm=bm).z
    assert (a - b).abs().mean() < 5e-3


@pytest.mark.slow
def test_single_step_compiled_solver_matches_eager():
    gbm = GeometricBrownianMotion(mu=0.3, sigma=0.6)
    bm = BrownianPath(0, 1, (32, 2), seed=4)
    t = torch.linspace(0, 1, 5, dtype=F64)
    z0 = torch.rand(32, 2, dtype=F64) + 0.5
    with torch.no_grad():
        eager = sdeint(gbm, z0, t, solver=EulerMaruyama(), dt=0.05, bm=bm).z
        compiled = sdeint(gbm, z0, t, solver=Compiled(EulerMaruyama(), steps_per_graph=1),
                          dt=0.05, bm=bm).z
    torch.testing.assert_close(compiled, eager, rtol=0, atol=1e-10)
