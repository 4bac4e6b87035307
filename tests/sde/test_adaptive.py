"""Adaptive steps by step doubling: the error follows the tolerance, beats fixed steps
of the same average size, lands on every sequence's own observation times and solves
each row as if alone."""

import pytest
import torch

from dynvae.errors import ConfigError, DataError
from dynvae.sde import (
    SDE,
    SRK,
    BrownianPath,
    BrownianTree,
    EulerHeun,
    Milstein,
    NoiseType,
    SDEType,
    sdeint,
)
from dynvae.sde.adaptive import sdeint_adaptive
from dynvae.sde.processes import OrnsteinUhlenbeck
from tests.sde.test_adjoint import GBM

F64 = torch.float64


def _gbm_case(B):
    t = torch.tensor([0.0, 0.5, 1.0], dtype=F64)
    bm = BrownianTree(0.0, 1.0, (B, 1), seed=11)
    exact = torch.exp((0.3 - 0.32) * t[None, :, None] + 0.8 * bm.value(t))  # z0 = 1
    return GBM(0.3, 0.8), torch.ones(B, 1, dtype=F64), t, bm, exact


@torch.no_grad()
def test_error_follows_the_tolerance_and_beats_fixed_steps():
    sde, z0, t, bm, exact = _gbm_case(64)
    errors, steps = [], []
    for rtol in (1e-2, 1e-4):
        sol, stats = sdeint_adaptive(sde, z0, t, Milstein(), rtol=rtol, atol=rtol, bm=bm)
        errors.append(float((sol.z - exact).abs()[:, 1:].mean()))
        steps.append(float(stats.steps.double().mean()))
    # measured (B = 256): mean error 0.019 -> 0.0019 with 8 -> 50 steps per path
    assert errors[1] < errors[0] / 4 and steps[1] > 3 * steps[0]
    fixed = sdeint(sde, z0, t, Milstein(), 1.0 / steps[1], bm=bm).z
    assert errors[1] < 0.75 * float((fixed - exact).abs()[:, 1:].mean())


class Elementwise(SDE):
    """A nonlinear diagonal Stratonovich SDE with no matmul, so that a row computes the
    same bits in any batch."""

    noise, sde_type = NoiseType.DIAGONAL, SDEType.STRATONOVICH

    def drift(self, t, z):
        return -z + torch.sin(3 * t) * torch.tanh(z)

    def diffusion(self, t, z):
        return 0.2 + 0.5 * torch.sigmoid(z)


@torch.no_grad()
def test_rows_land_on_their_own_times_and_equal_each_row_alone():
    sde = Elementwise()
    t = torch.tensor([[0.0, 0.3, 0.35, 1.0], [0.2, 0.9, 1.4, 1.5], [0.1, 0.2, 0.3, 0.4]],
                     dtype=F64)
    z0 = torch.randn(3, 2, dtype=F64, generator=torch.Generator().manual_seed(0))
    bm = BrownianTree(0.0, 1.5, (3, 2), seed=2)
    sol, stats = sdeint_adaptive(sde, z0, t, EulerHeun(), rtol=1e-3, atol=1e-3, bm=bm)
    assert sol.z.shape == (3, 4, 2) and torch.equal(sol.z[:, 0], z0)
    for b in range(3):
        alone, _ = sdeint_adaptive(sde, z0[b:b + 1], t[b], EulerHeun(), rtol=1e-3, atol=1e-3,
                                   bm=bm.rows([b]))
        torch.testing.assert_close(alone.z[0], sol.z[b], rtol=0, atol=1e-13)
    # against a fine fixed-step solve on the same path
    fine = sdeint(sde, z0, t, EulerHeun(), 4e-3, bm=bm).z
    assert float((fine - sol.z).abs().max()) < 0.05
    assert int(stats.steps.min()) >= 3


@torch.no_grad()
def test_additive_srk_with_levy_areas():
    sde = OrnsteinUhlenbeck(theta=2.0, mu=0.5, sigma=0.6)
    z0 = torch.full((16, 1), 2.0, dtype=F64)
    t = torch.tensor([0.0, 0.7, 2.0], dtype=F64)
    bm = BrownianPath(0.0, 2.0, (16, 1), seed=5)  # any BrownianMotion: here stored knots
    errs = []
    for tol in (1e-2, 1e-4):
        sol, _ = sdeint_adaptive(sde, z0, t, SRK(), rtol=tol, atol=tol, bm=bm)
        fine = sdeint(sde, z0, t, SRK(), 1e-3, bm=bm).z  # the path refined by the trials
        errs.append(float((sol.z - fine).abs().max()))
    # measured: 1.1e-2 and 3.4e-4 (17 and 81 trials)
    assert errs[1] < errs[0] / 10 and errs[1] < 1e-3, errs


def test_bad_options_and_budget_are_clear_errors():
    sde, z0, t, bm, _ = _gbm_case(2)
    with pytest.raises(ConfigError, match="rtol and atol cannot both be 0"):
        sdeint_adaptive(sde, z0, t, Milstein(), rtol=0, atol=0)
    with pytest.raises(DataError, match="raise max_trials"):
        sdeint_adaptive(sde, z0, t, Milstein(), rtol=1e-8, atol=1e-8, bm=bm, max_trials=20)
    with pytest.raises(DataError, match="BrownianMotion of shape"):
        sdeint_adaptive(sde, z0, t, Milstein(), bm=BrownianTree(0.0, 1.0, (3, 1)))
