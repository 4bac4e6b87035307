"""Per-sequence grids equal solving each sequence alone; Euler and Milstein equal
torchsde when both see identical Brownian increments."""

import pytest
import torch

from dynvae.sde import (
    SDE,
    BrownianPath,
    EulerMaruyama,
    Milstein,
    NoiseType,
    SDEWithRunningCost,
    sdeint,
    step_schedule,
)
from tests.reference.sde_oracles import torchsde_brownian

F64 = torch.float64


class TanhSDE(SDEWithRunningCost):
    """Nonlinear, time-dependent drift and diagonal diffusion, with a running cost."""

    noise = NoiseType.DIAGONAL

    def __init__(self, z_dim: int, seed: int = 0):
        gen = torch.Generator().manual_seed(seed)
        self.A = torch.randn(z_dim, z_dim, generator=gen, dtype=F64) / z_dim ** 0.5
        self.s = 0.3 + torch.rand(z_dim, generator=gen, dtype=F64)

    def drift(self, t, z):
        return torch.tanh(z @ self.A.T) - 0.5 * z + 0.1 * torch.cos(t)

    def diffusion(self, t, z):
        return self.s * torch.sigmoid(z) + 0.05 * torch.sin(t) ** 2

    def running_cost(self, t, z):
        return (z ** 2).sum(-1)


def _per_sequence_grid(B, T, seed):
    gen = torch.Generator().manual_seed(seed)
    gaps = 0.05 + 0.4 * torch.rand(B, T - 1, generator=gen, dtype=F64)
    start = torch.rand(B, 1, generator=gen, dtype=F64) * 0.3
    return torch.cat([start, start + gaps.cumsum(-1)], dim=-1)  # (B, T)


def test_schedule_lands_on_observation_times_with_steps_at_most_dt():
    t = _per_sequence_grid(5, 6, seed=1)
    times, obs = step_schedule(t, 0.07)
    torch.testing.assert_close(times.gather(1, obs), t, rtol=0, atol=0)
    h = torch.diff(times, dim=-1)
    assert (h >= 0).all() and (h <= 0.07 + 1e-12).all()


def test_schedule_takes_as_many_steps_as_the_longest_sequence_needs():
    # Misaligned intervals: each row needs 10 steps of 0.1; aligning intervals across
    # rows would need 9 + 9.
    t = torch.tensor([[0.0, 0.1, 1.0], [0.0, 0.9, 1.0]], dtype=F64)
    times, obs = step_schedule(t, 0.1)
    assert times.shape == (2, 11)
    assert obs.tolist() == [[0, 1, 10], [0, 9, 10]]
    torch.testing.assert_close(times.gather(1, obs), t, rtol=0, atol=0)
    # A shorter row ends with zero-length steps at its last time.
    times, obs = step_schedule(torch.tensor([[0.0, 0.5], [0.0, 1.0]], dtype=F64), 0.1)
    assert times.shape == (2, 11) and obs.tolist() == [[0, 5], [0, 10]]
    torch.testing.assert_close(times[0, 5:], torch.full((6,), 0.5, dtype=F64), rtol=0, atol=0)
    torch.testing.assert_close(torch.diff(times[1]), torch.full((10,), 0.1, dtype=F64))


@pytest.mark.parametrize("solver", [EulerMaruyama(), Milstein()], ids=repr)
def test_per_sequence_grids_match_solving_each_sequence_alone(solver):
    B, T, Z = 4, 7, 3
    sde = TanhSDE(Z)
    t = _per_sequence_grid(B, T, seed=2)
    z0 = torch.randn(B, Z, dtype=F64)
    bm = BrownianPath(0.0, float(t.max()) + 1e-9, (B, Z), seed=4)
    batch = sdeint(sde, z0, t, solver=solver, dt=0.03, bm=bm)
    assert batch.z.shape == (B, T, Z) and batch.running_cost.shape == (B, T)
    for b in range(B):
        alone = sdeint(sde, z0[b:b + 1], t[b], solver=solver, dt=0.03, bm=bm.rows([b]))
        torch.testing.assert_close(batch.z[b], alone.z[0], rtol=0, atol=1e-12)
        torch.testing.assert_close(batch.running_cost[b], alone.running_cost[0], rtol=0,
                                   atol=1e-12)


class GBMDiag(SDE):
    noise = NoiseType.DIAGONAL

    def drift(self, t, z):
        return 0.3 * z - 0.1 * z ** 2

    def diffusion(self, t, z):
        return 0.5 * torch.sin(z) + 0.2


class TorchsdeGBMDiag(torch.nn.Module):
    noise_type, sde_type = "diagonal", "ito"

    def f(self, t, y):
        return GBMDiag().drift(t, y)

    def g(self, t, y):
        return GBMDiag().diffusion(t, y)


@pytest.mark.parametrize("method, solver", [("euler", EulerMaruyama()), ("milstein", Milstein())])
def test_agrees_with_torchsde_on_identical_increments(method, solver):
    torchsde = pytest.importorskip("torchsde")
    B, Z, dt = 16, 3, 2.0 ** -6
    t = torch.linspace(0, 1, 9, dtype=F64)  # observation times are multiples of dt
    z0 = torch.rand(B, Z, dtype=F64) + 0.5
    bm = BrownianPath(0.0, 1.0, (B, Z), seed=5)
    ours = sdeint(GBMDiag(), z0, t, solver=solver, dt=dt, bm=bm).z  # (B, T, Z)
    theirs = torchsde.sdeint(TorchsdeGBMDiag(), z0, t, method=method, dt=dt,
                             bm=torchsde_brownian(bm))  # (T, B, Z)
    torch.testing.assert_close(ours, theirs.transpose(0, 1), rtol=0, atol=1e-10)
