"""dynvae.ode against torchdiffeq (an optional peer, skipped when missing) on identical
problems: fixed steps exactly, dopri5 and its gradients at tight tolerance."""

import pytest
import torch

from dynvae.ode import DormandPrince, Euler, FixedStep, Midpoint, odeint
from dynvae.ode.tableau import ButcherTableau
from tests.ode.test_odeint import F64, Field, Z

torchdiffeq = pytest.importorskip("torchdiffeq")

# Kutta's 3/8 rule, the scheme of torchdiffeq's "rk4": a tableau is plain data
THREE_EIGHTHS = ButcherTableau("rk38", (0.0, 1 / 3, 2 / 3, 1.0),
                               ((), (1 / 3,), (-1 / 3, 1.0), (1.0, -1.0, 1.0)),
                               (1 / 8, 3 / 8, 3 / 8, 1 / 8), order=4)


class ThreeEighths(FixedStep):
    tableau = THREE_EIGHTHS


@pytest.mark.parametrize("ours, theirs", [(Euler(), "euler"), (Midpoint(), "midpoint"),
                                          (ThreeEighths(), "rk4")])
def test_fixed_steps_equal_torchdiffeq_on_the_same_grid(ours, theirs):
    f = Field()
    t = torch.tensor([0.0, 0.5, 1.25, 2.0], dtype=F64)      # on torchdiffeq's 0.125 grid
    z0 = torch.randn(5, Z, dtype=F64, generator=torch.Generator().manual_seed(8))
    with torch.no_grad():
        mine = odeint(f, z0, t, ours, 0.125)
        peer = torchdiffeq.odeint(f, z0, t, method=theirs, options={"step_size": 0.125})
    torch.testing.assert_close(mine, peer.transpose(0, 1), rtol=1e-12, atol=1e-12)


def test_dopri5_and_its_gradients_match_torchdiffeq_at_tight_tolerance():
    """Values against torchdiffeq's dopri5, and our backpropagated gradients against its
    adjoint method (an independent way to differentiate the solution)."""
    f, t = Field(), torch.linspace(0.0, 3.0, 6, dtype=F64)
    z0 = torch.randn(4, Z, dtype=F64, generator=torch.Generator().manual_seed(9))
    target = torch.randn(4, 6, Z, dtype=F64, generator=torch.Generator().manual_seed(10))
    params = list(f.parameters())

    def loss_and_grads(solve):
        loss = (solve() - target).pow(2).sum()
        return loss.detach(), torch.autograd.grad(loss, params)

    mine, g_mine = loss_and_grads(lambda: odeint(f, z0, t, DormandPrince(rtol=1e-10,
                                                                         atol=1e-10)))
    peer, g_peer = loss_and_grads(lambda: torchdiffeq.odeint_adjoint(
        f, z0, t, method="dopri5", rtol=1e-10, atol=1e-10).transpose(0, 1))
    torch.testing.assert_close(mine, peer, rtol=1e-8, atol=1e-8)
    for a, b in zip(g_mine, g_peer, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("rtol, atol", [(1e-3, 1e-4), (1e-5, 1e-6), (1e-7, 1e-8)])
def test_adaptive_accuracy_is_that_of_torchdiffeq_at_the_same_tolerances(rtol, atol):
    """Steps chosen by error control, observations read from dense output: the global
    error at the observation times is no worse than torchdiffeq's dopri5 at the same
    tolerances (its own error against a 1e-10 solution)."""
    f, t = Field(), torch.linspace(0.0, 3.0, 6, dtype=F64)
    z0 = torch.randn(4, Z, dtype=F64, generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        exact = torchdiffeq.odeint(f, z0, t, rtol=1e-10, atol=1e-10).transpose(0, 1)
        mine = odeint(f, z0, t, DormandPrince(rtol=rtol, atol=atol))
        peer = torchdiffeq.odeint(f, z0, t, method="dopri5", rtol=rtol, atol=atol)
    error, peer_error = (mine - exact).abs().max(), (peer.transpose(0, 1) - exact).abs().max()
    assert float(error) <= 1.5 * float(peer_error), (float(error), float(peer_error))
