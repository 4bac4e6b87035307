"""Milstein with a closed-form diffusion derivative (SDE.diffusion_and_derivative):
the derivative equals autograd's, and paths, running costs and parameter gradients
equal those of the autograd correction on the same Brownian path."""

from __future__ import annotations

import pytest
import torch

from dynvae.nn.diffusion import DiagonalDiffusion
from dynvae.sde import BrownianPath, DiagonalSDE, GirsanovKL, Milstein, sdeint
from dynvae.sde.solvers.milstein import diffusion_directional_derivative

Z, B = 5, 7


def _nets():
    torch.manual_seed(0)
    diffusion = DiagonalDiffusion(Z, hidden=6, min_diffusion=1e-3).double()
    drift = torch.nn.Sequential(torch.nn.Linear(Z, 8), torch.nn.Tanh(),
                                torch.nn.Linear(8, Z)).double()
    return diffusion, drift


def test_closed_form_derivative_equals_autograd():
    diffusion, _ = _nets()
    z = torch.randn(3, B, Z, dtype=torch.float64, requires_grad=True)
    g, d = diffusion.value_and_derivative(z)
    torch.testing.assert_close(g, diffusion(z), rtol=0, atol=0)
    # g_i depends on z_i only, so the gradient of sum(g) is the diagonal derivative
    (auto,) = torch.autograd.grad(diffusion(z).sum(), z)
    torch.testing.assert_close(d, auto, rtol=1e-12, atol=1e-14)


class _Counting:
    def __init__(self, fn):
        self.fn, self.calls = fn, 0

    def __call__(self, *args):
        self.calls += 1
        return self.fn(*args)


@pytest.mark.parametrize("with_cost", [False, True])
def test_milstein_paths_and_gradients_equal_the_autograd_correction(with_cost):
    diffusion, drift = _nets()
    z0 = torch.randn(B, Z, dtype=torch.float64)
    t = torch.linspace(0.0, 1.0, 6, dtype=torch.float64)
    f = lambda t, z: drift(z)                                              # noqa: E731
    g = lambda t, z: diffusion(z)                                          # noqa: E731
    closed = _Counting(lambda t, z: diffusion.value_and_derivative(z))
    if with_cost:
        prior = lambda t, z: 0.5 * drift(z)                                # noqa: E731
        sdes = GirsanovKL(f, prior, g, closed), GirsanovKL(f, prior, g)
    else:
        sdes = DiagonalSDE(f, g, closed), DiagonalSDE(f, g)
    results = []
    for sde in sdes:
        bm = BrownianPath(0.0, 1.0, (B, Z), dtype=torch.float64, seed=3)
        sol = sdeint(sde, z0, t, Milstein(), dt=0.05, bm=bm)
        loss = sol.z.pow(2).sum() + (sol.running_cost.sum() if with_cost else 0.0)
        grads = torch.autograd.grad(loss, [*diffusion.parameters(), *drift.parameters()])
        results.append((sol.z.detach(), loss.detach(), grads))
    assert closed.calls >= 20                  # the closed form was used at every step
    (za, la, ga), (zb, lb, gb) = results
    torch.testing.assert_close(za, zb, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(la, lb, rtol=1e-12, atol=1e-12)
    for a, b in zip(ga, gb, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_a_wrong_derivative_changes_the_path():
    """Guard: the closed form is what the step uses (the equality above is not vacuous)."""
    diffusion, drift = _nets()
    z0 = torch.randn(B, Z, dtype=torch.float64)
    t = torch.linspace(0.0, 1.0, 3, dtype=torch.float64)
    wrong = DiagonalSDE(lambda t, z: drift(z), lambda t, z: diffusion(z),
                        lambda t, z: (diffusion(z), torch.zeros_like(z)))
    right = DiagonalSDE(lambda t, z: drift(z), lambda t, z: diffusion(z))
    with torch.no_grad():
        a = sdeint(wrong, z0, t, Milstein(), dt=0.1,
                   bm=BrownianPath(0.0, 1.0, (B, Z), dtype=torch.float64, seed=3)).z
        b = sdeint(right, z0, t, Milstein(), dt=0.1,
                   bm=BrownianPath(0.0, 1.0, (B, Z), dtype=torch.float64, seed=3)).z
    assert (a - b).abs().max() > 1e-4
    g, gdg = diffusion_directional_derivative(right, torch.tensor(0.0), z0)
    assert gdg.abs().max() > 1e-3
