"""dynvae.nn.loops: the loop arrangements equal the modules on the concatenation."""

import pytest
import torch
from torch import nn

from dynvae.nn.loops import gaussian_mlp_steps, gaussian_net_steps, gru_cell_steps
from dynvae.nn.mlp import MLP, GaussianHead, GaussianMLP, trunk

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


def rows(v: torch.Tensor, K: int) -> torch.Tensor:
    """(B, T, X) -> (K B, T, X): row k B + b is sequence b."""
    return v.expand(K, *v.shape).reshape(K * v.shape[0], *v.shape[1:])


@pytest.mark.parametrize("hidden", [(), (7,), (6, 5)])
@pytest.mark.parametrize("K, state_first", [(1, True), (3, True), (2, False)])
def test_gaussian_mlp_steps_equal_the_modules(hidden, K, state_first):
    S, X, Z, B, T = 3, 4, 2, 5, 6
    net_trunk, width = trunk(S + X, hidden)
    net_trunk, head = perturbed(net_trunk), perturbed(GaussianHead(width, Z, min_var=1e-3))
    assert isinstance(net_trunk, nn.Identity if not hidden else MLP)
    g = torch.Generator().manual_seed(1)
    inputs = torch.randn(B, T, X, generator=g, dtype=F64, requires_grad=True)
    states = torch.randn(T, K * B, S, generator=g, dtype=F64, requires_grad=True)
    step = gaussian_mlp_steps(net_trunk, head, S, inputs, K, state_first)
    fast = torch.stack([torch.stack(step(t, states[t])) for t in range(T)])
    per_row = rows(inputs, K)

    def reference_step(t):
        parts = [states[t], per_row[:, t]] if state_first else [per_row[:, t], states[t]]
        return torch.stack(head(net_trunk(torch.cat(parts, -1))))
    reference = torch.stack([reference_step(t) for t in range(T)])
    assert_same_with_gradients(fast, reference, [inputs, states, *net_trunk.parameters(),
                                                 *head.parameters()])


def test_gaussian_net_steps_take_a_gaussian_mlp_or_any_module():
    net = perturbed(GaussianMLP(5, (4,), 2, min_var=1e-3))
    inputs = torch.randn(2, 3, 3, dtype=F64)
    state = torch.randn(4, 2, dtype=F64)
    for t in range(3):
        fast = gaussian_net_steps(net, 2, inputs, 2)(t, state)
        reference = net(torch.cat([state, rows(inputs, 2)[:, t]], -1))
        for a, b in zip(fast, reference, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-13, atol=1e-14)
    mean, var = gaussian_net_steps(Halves(), 2, inputs, state_first=False)(1, state[:2])
    torch.testing.assert_close(mean, inputs[:, 1, :2], rtol=0, atol=0)
    torch.testing.assert_close(var, torch.cat([inputs[:, 1, 2:], state[:2, :1]], -1).exp(),
                               rtol=0, atol=0)


def test_other_heads_are_applied_to_the_concatenation():
    inputs = torch.randn(3, 4, 2, dtype=F64)
    step = gaussian_mlp_steps(nn.Identity(), Halves(), 2, inputs)
    state = torch.randn(3, 2, dtype=F64)
    mean, var = step(1, state)
    torch.testing.assert_close(mean, state, rtol=0, atol=0)
    torch.testing.assert_close(var, inputs[:, 1].exp(), rtol=0, atol=0)


@pytest.mark.parametrize("K", [1, 2])
def test_gru_cell_steps_equal_the_gru_cell(K):
    X, E, H, B, T = 4, 3, 5, 6, 7
    cell = perturbed(nn.GRUCell(X + E, H))
    g = torch.Generator().manual_seed(2)
    inputs = torch.randn(B, T, X, generator=g, dtype=F64, requires_grad=True)
    extra = torch.randn(T, K * B, E, generator=g, dtype=F64, requires_grad=True)
    h0 = torch.randn(K * B, H, generator=g, dtype=F64, requires_grad=True)
    step = gru_cell_steps(cell, inputs, K)
    h, fast = h0, []
    for t in range(T):
        h = step(t, extra[t], h)
        fast.append(h)
    h, reference, per_row = h0, [], rows(inputs, K)
    for t in range(T):
        h = cell(torch.cat([per_row[:, t], extra[t]], -1), h)
        reference.append(h)
    assert_same_with_gradients(torch.stack(fast), torch.stack(reference),
                               [inputs, extra, h0, *cell.parameters()])
