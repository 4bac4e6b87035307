"""Compiled solvers (several steps per graph) against the eager solvers, float64."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dynvae.errors import ConfigError
from dynvae.sde import (
    SDE,
    SRK,
    BrownianPath,
    EulerMaruyama,
    Milstein,
    NoiseType,
    SDEWithRunningCost,
    sdeint,
)
from dynvae.sde.processes import GeometricBrownianMotion, OrnsteinUhlenbeck
from dynvae.sde.solvers import Compiled

F64 = torch.float64


class NeuralDiagonal(nn.Module, SDEWithRunningCost):
    """Small neural drift, per-coordinate neural diffusion, and a running cost."""

    noise = NoiseType.DIAGONAL

    def __init__(self, z_dim: int = 3):
        super().__init__()
        torch.manual_seed(0)
        self.f = nn.Sequential(nn.Linear(z_dim, 8), nn.Tanh(), nn.Linear(8, z_dim)).double()
        self.w = nn.Parameter(torch.randn(z_dim, 4, dtype=F64))
        self.v = nn.Parameter(torch.randn(z_dim, 4, dtype=F64) * 0.3)

    def drift(self, t, z):
        return self.f(z)

    def diffusion(self, t, z):  # g_i depends on z_i only
        return torch.sigmoid((torch.tanh(z.unsqueeze(-1) * self.w) * self.v).sum(-1))

    def running_cost(self, t, z):
        return 0.5 * (z ** 2).sum(-1)


def test_compiled_rejects_bad_configuration():
    with pytest.raises(ConfigError, match="steps_per_graph"):
        Compiled(EulerMaruyama(), steps_per_graph=0)
    with pytest.raises(ConfigError, match="plain solver"):
        Compiled(Compiled(EulerMaruyama()))
    assert Compiled(Milstein()).strong_order == 1.0
    assert Compiled(SRK()).needs_levy_area
    assert Compiled(EulerMaruyama(), steps_per_graph=4).steps_per_call == 4


@pytest.mark.slow
@pytest.mark.parametrize("recompute", [False, True])
@pytest.mark.parametrize("solver", [EulerMaruyama(), Milstein(), Milstein(derivative_free=True)],
                         ids=repr)
def test_blocked_compiled_solver_matches_eager_values_costs_and_gradients(solver, recompute):
    """Blocks of 4 steps, the last one padded, per-sequence grids, both ways of
    handling activations in the backward pass."""
    sde = NeuralDiagonal()
    B = 6
    t = torch.sort(torch.rand(B, 4, dtype=F64, generator=torch.Generator().manual_seed(1)),
                   -1).values
    t[:, 0] = 0.0
    bm = BrownianPath(0.0, 1.0, (B, 3), dtype=F64, seed=2)
    z0 = torch.randn(B, 3, dtype=F64, generator=torch.Generator().manual_seed(3))

    def solve(s):
        sde.zero_grad()
        out = sdeint(sde, z0, t, solver=s, dt=0.07, bm=bm)
        (out.z.pow(2).sum() + out.running_cost.sum()).backward()
        return out, [p.grad.clone() for p in sde.parameters()]

    eager, eager_grads = solve(solver)
    comp, comp_grads = solve(Compiled(solver, steps_per_graph=4, recompute=recompute))
    torch.testing.assert_close(comp.z, eager.z, rtol=0, atol=1e-10)
    torch.testing.assert_close(comp.running_cost, eager.running_cost, rtol=0, atol=1e-10)
    for a, b in zip(comp_grads, eager_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)


@pytest.mark.slow
def test_blocked_compiled_on_shared_grid_with_drawn_noise_and_levy_area():
    gbm = GeometricBrownianMotion(mu=0.3, sigma=0.6)
    t = torch.linspace(0, 1, 5, dtype=F64)
    z0 = torch.rand(32, 2, dtype=F64) + 0.5
    with torch.no_grad():
        a = sdeint(gbm, z0, t, solver=EulerMaruyama(), dt=0.01,
                   generator=torch.Generator().manual_seed(5)).z
        b = sdeint(gbm, z0, t, solver=Compiled(EulerMaruyama(), steps_per_graph=8), dt=0.01,
                   generator=torch.Generator().manual_seed(5)).z
    torch.testing.assert_close(b, a, rtol=0, atol=1e-10)
    ou: SDE = OrnsteinUhlenbeck(theta=1.5, mu=0.2, sigma=0.7)
    bm = BrownianPath(0.0, 1.0, (16, 2), dtype=F64, seed=6)
    z0 = torch.randn(16, 2, dtype=F64)
    a = sdeint(ou, z0, t, solver=SRK(), dt=0.03, bm=bm).z
    b = sdeint(ou, z0, t, solver=Compiled(SRK(), steps_per_graph=5), dt=0.03, bm=bm).z
    torch.testing.assert_close(b, a, rtol=0, atol=1e-10)


class InPlaceNets(nn.Module, SDE):
    """Networks with in-place operations that eager autograd accepts."""

    noise = NoiseType.DIAGONAL

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.f = nn.Sequential(nn.Linear(3, 8), nn.ReLU(inplace=True), nn.Linear(8, 3)).double()
        self.w = nn.Parameter(torch.randn(3, dtype=F64))

    def drift(self, t, z):
        return (torch.tanh(self.f(z)) * 2.0).add_(1.0)

    def diffusion(self, t, z):
        return (torch.sigmoid(z * self.w) * 0.5).add_(0.1)


@pytest.mark.slow
def test_kept_activations_give_eager_gradients_with_in_place_operations():
    sde = InPlaceNets()
    z0 = torch.randn(5, 3, dtype=F64, generator=torch.Generator().manual_seed(7))
    t = torch.linspace(0, 1, 4, dtype=F64)
    bm = BrownianPath(0.0, 1.0, (5, 3), dtype=F64, seed=1)

    def grads(solver):
        sde.zero_grad()
        sdeint(sde, z0, t, solver=solver, dt=0.05, bm=bm).z.pow(2).sum().backward()
        return [p.grad.clone() for p in sde.parameters()]

    eager = grads(EulerMaruyama())
    for recompute in (False, True):
        compiled = grads(Compiled(EulerMaruyama(), steps_per_graph=4, recompute=recompute))
        for a, b in zip(compiled, eager, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
