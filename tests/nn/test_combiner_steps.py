"""Combiner.steps, the DKF's sampling loop arrangement, against the combiner formula."""

import pytest
import torch

from dynvae.nn import Combiner
from dynvae.nn.encoders import ENCODERS
from dynvae.nn.encoders.base import Encoder

F64 = torch.float64


def combiner(seed: int = 0) -> Combiner:
    torch.manual_seed(seed)
    net = Combiner(latent_dim=3, context_dim=5, min_var=1e-3).double()
    with torch.no_grad():                   # away from the zero-bias initialisation
        for p in net.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return net


def loop(step, z0: torch.Tensor, T: int, eps: torch.Tensor):
    """Ancestral path z_t = mean_t + sqrt(var_t) eps_t, all means and variances."""
    z, out = z0, []
    for t in range(T):
        mean, var = step(t, z)
        out += [mean, var]
        z = mean + var.sqrt() * eps[t]
    return torch.stack(out)


@pytest.mark.parametrize("K", [1, 3])
def test_steps_equal_the_formula_with_their_gradients(K):
    net = combiner()
    g = torch.Generator().manual_seed(1)
    B, T = 2, 4
    context = torch.randn(B, T, 5, generator=g, dtype=F64).tanh().requires_grad_()
    z0 = torch.randn(K * B, 3, generator=g, dtype=F64, requires_grad=True)
    eps = torch.randn(T, K * B, 3, generator=g, dtype=F64)
    weights = torch.randn(T * 2, K * B, 3, generator=g, dtype=F64)

    rows = context.expand(K, B, T, 5).reshape(K * B, T, 5)     # row k B + b: sequence b
    reference = loop(lambda t, z: net(z, rows[:, t]), z0, T, eps)
    fast = loop(net.steps(context, K), z0, T, eps)
    torch.testing.assert_close(fast, reference, rtol=1e-13, atol=1e-14)

    wrt = [context, z0, *net.parameters()]
    g_ref = torch.autograd.grad((reference * weights).sum(), wrt)
    g_fast = torch.autograd.grad((fast * weights).sum(), wrt)
    for a, b in zip(g_fast, g_ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-13)


def test_every_encoder_steps_like_its_step():
    """The encoders' loop form (used by the DKF) gives what ``step`` gives on the same
    context rows, for K = 2 samples per sequence."""
    g = torch.Generator().manual_seed(2)
    B, T, F_, Z, K = 2, 5, 4, 3, 2
    features = torch.randn(B, T, F_, generator=g, dtype=F64)
    lengths = torch.tensor([5, 3])
    for name, cls in ENCODERS.items():
        torch.manual_seed(0)
        enc = cls(F_, Z, 8).double()
        ctx = enc.summarise(features, lengths)
        rows = ctx.expand(K, *ctx.shape).reshape(K * B, T, -1)
        z = torch.randn(K * B, Z, generator=g, dtype=F64)
        step = enc.steps(ctx, K)
        for t in range(T):
            for a, b in zip(step(t, z), enc.step(rows[:, t], z), strict=True):
                torch.testing.assert_close(a, b, rtol=1e-13, atol=1e-14, msg=name)


def test_the_default_steps_of_an_encoder_call_its_step():
    class Doubling(Encoder):
        context_dim = 2

        def summarise(self, features, lengths):
            return features

        def step(self, context, z_prev):
            return 2 * context + z_prev, context.exp()

    enc = Doubling(2, 2)
    ctx = torch.randn(3, 4, 2, dtype=F64)
    z = torch.randn(6, 2, dtype=F64)
    step = enc.steps(ctx, 2)
    for t in range(4):
        mean, var = step(t, z)
        rows = torch.cat([ctx[:, t], ctx[:, t]])
        torch.testing.assert_close(mean, 2 * rows + z, rtol=0, atol=0)
        torch.testing.assert_close(var, rows.exp(), rtol=0, atol=0)
