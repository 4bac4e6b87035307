"""dynvae.nn.loops: the loop arrangements equal the modules on the concatenation."""

import pytest
import torch
from torch import nn

from dynvae.nn.loops import gaussian_mlp_steps, gru_cell_steps
from dynvae.nn.mlp import MLP, GaussianHead, trunk

F64 = torch.float64


def perturbed(module: nn.Module) -> nn.Module:
    torch.manual_seed(5)
    module = module.double()
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return module


def assert_same_with_gradients(fast, reference, wrt):
    torch.testing.assert_close(fast, reference, rtol=1e-13, atol=1e-14)
    weights = torch.randn(fast.shape, generator=torch.Generator().manual_seed(9), dtype=F64)
    g_fast = torch.autograd.grad((fast * weights).sum(), wrt)
    g_ref = torch.autograd.grad((reference * weights).sum(), wrt)
    for a, b in zip(g_fast, g_ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-13)


class Halves(nn.Module):      # a head that is not a GaussianHead: the generic path
    def forward(self, h):
        return h[..., :2], h[..., 2:4].exp()


@pytest.mark.parametrize("hidden", [(), (7,), (6, 5)])
def test_gaussian_mlp_steps_equal_the_modules(hidden):
    S, X, Z, N, T = 3, 4, 2, 5, 6
    net_trunk, width = trunk(S + X, hidden)
    net_trunk, head = perturbed(net_trunk), perturbed(GaussianHead(width, Z, min_var=1e-3))
    assert isinstance(net_trunk, nn.Identity if not hidden else MLP)
    g = torch.Generator().manual_seed(1)
    inputs = torch.randn(N, T, X, generator=g, dtype=F64, requires_grad=True)
    states = torch.randn(T, N, S, generator=g, dtype=F64, requires_grad=True)
    step = gaussian_mlp_steps(net_trunk, head, S, inputs)
    fast = torch.stack([torch.stack(step(t, states[t])) for t in range(T)])
    reference = torch.stack([torch.stack(head(net_trunk(torch.cat([states[t], inputs[:, t]],
                                                                   -1)))) for t in range(T)])
    assert_same_with_gradients(fast, reference, [inputs, states, *net_trunk.parameters(),
                                                 *head.parameters()])


def test_other_heads_are_applied_to_the_concatenation():
    inputs = torch.randn(3, 4, 2, dtype=F64)
    step = gaussian_mlp_steps(nn.Identity(), Halves(), 2, inputs)
    state = torch.randn(3, 2, dtype=F64)
    mean, var = step(1, state)
    torch.testing.assert_close(mean, state, rtol=0, atol=0)
    torch.testing.assert_close(var, inputs[:, 1].exp(), rtol=0, atol=0)


def test_gru_cell_steps_equal_the_gru_cell():
    X, E, H, N, T = 4, 3, 5, 6, 7
    cell = perturbed(nn.GRUCell(X + E, H))
    g = torch.Generator().manual_seed(2)
    inputs = torch.randn(N, T, X, generator=g, dtype=F64, requires_grad=True)
    extra = torch.randn(T, N, E, generator=g, dtype=F64, requires_grad=True)
    h0 = torch.randn(N, H, generator=g, dtype=F64, requires_grad=True)
    step = gru_cell_steps(cell, inputs)
    h, fast = h0, []
    for t in range(T):
        h = step(t, extra[t], h)
        fast.append(h)
    h, reference = h0, []
    for t in range(T):
        h = cell(torch.cat([inputs[:, t], extra[t]], -1), h)
        reference.append(h)
    assert_same_with_gradients(torch.stack(fast), torch.stack(reference),
                               [inputs, extra, h0, *cell.parameters()])
