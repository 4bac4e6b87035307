"""The stochastic adjoint and checkpointed blocks: gradients equal backpropagation
through the solver, match the exact pathwise gradients of GBM and OU within the
discretisation error, agree with torchsde's adjoint on the same Brownian path, and
keep memory independent of the number of steps."""

import math

import pytest
import torch
from torch import nn

from dynvae.errors import ConfigError, DataError
from dynvae.sde import (
    SDE,
    Adjoint,
    Backprop,
    BrownianTree,
    CheckpointedBlocks,
    EulerHeun,
    EulerMaruyama,
    GirsanovKL,
    Milstein,
    NoiseType,
    SDEType,
    sdeint,
)
from tests.reference.sde_oracles import torchsde_brownian

F64 = torch.float64
DT_OU = 4e-3


class NetSDE(SDE, nn.Module):
    """A small neural diagonal SDE (Ito or Stratonovich)."""

    noise = NoiseType.DIAGONAL

    def __init__(self, z_dim: int = 3, sde_type: SDEType = SDEType.ITO):
        nn.Module.__init__(self)
        self.sde_type = sde_type
        self.f = nn.Sequential(nn.Linear(z_dim + 1, 16), nn.Tanh(), nn.Linear(16, z_dim))
        self.g = nn.Parameter(torch.linspace(0.2, 0.6, z_dim))
        self.b = nn.Parameter(torch.zeros(z_dim))

    def drift(self, t, z):
        return self.f(torch.cat([z, torch.cos(t).expand(z.shape[0], 1)], -1))

    def diffusion(self, t, z):
        return self.g * torch.sigmoid(z + self.b)


class GBM(SDE, nn.Module):
    """dz = mu z dt + sigma z dW (Ito)."""

    noise = NoiseType.DIAGONAL

    def __init__(self, mu: float, sigma: float):
        nn.Module.__init__(self)
        self.mu = nn.Parameter(torch.tensor(mu, dtype=F64))
        self.sigma = nn.Parameter(torch.tensor(sigma, dtype=F64))

    def drift(self, t, z):
        return self.mu * z

    def diffusion(self, t, z):
        return self.sigma * z


class OU(SDE, nn.Module):
    """dz = -theta z dt + sigma dW."""

    noise = NoiseType.DIAGONAL

    def __init__(self, theta: float, sigma: float):
        nn.Module.__init__(self)
        self.theta = nn.Parameter(torch.tensor(theta, dtype=F64))
        self.sigma = nn.Parameter(torch.tensor(sigma, dtype=F64))

    def drift(self, t, z):
        return -self.theta * z

    def diffusion(self, t, z):
        return self.sigma.expand_as(z)


def _grads(sde, z0, t, solver, dt, gradients, bm=None, loss=lambda z: (z ** 2).sum()):
    z0 = z0.detach().requires_grad_(True)
    gen = torch.Generator().manual_seed(5)
    z = sdeint(sde, z0, t, solver, dt, bm=bm, generator=gen, gradients=gradients).z
    return z.detach(), torch.autograd.grad(loss(z), [z0, *sde.parameters()])


def _max_rel(a, b):
    return max(float((x - y).abs().max() / y.abs().max().clamp_min(1e-30))
               for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize("solver", [EulerMaruyama(), Milstein(), EulerHeun()],
                         ids=["euler", "milstein", "euler-heun"])
def test_adjoint_and_checkpoints_equal_backprop(solver):
    torch.manual_seed(0)
    sde = NetSDE(sde_type=solver.sde_type).double()
    z0 = torch.randn(6, 3, dtype=F64)
    t = torch.tensor([0.0, 0.13, 0.5, 0.51, 1.0], dtype=F64)
    z_ref, ref = _grads(sde, z0, t, solver, 0.02, Backprop())
    for gradients in (Adjoint(), CheckpointedBlocks(7)):
        z, got = _grads(sde, z0, t, solver, 0.02, gradients)
        assert torch.equal(z, z_ref)
        assert _max_rel(got, ref) < 1e-9, (gradients, _max_rel(got, ref))


def test_adjoint_per_sequence_grids_running_cost_and_closure_tensors():
    """GirsanovKL from closures over networks and a non-leaf context tensor (as in the
    latent SDE), per-sequence grids of different lengths, a loss on z and the cost."""
    torch.manual_seed(1)
    B, Z = 4, 2
    post, prior = nn.Linear(Z + 1, Z).double(), nn.Linear(Z, Z).double()
    raw = torch.randn(B, 1, dtype=F64, requires_grad=True)
    context = torch.tanh(raw) * 2                      # non-leaf, like an encoder's output
    sde = GirsanovKL(lambda t, z: post(torch.cat([z, context], -1)),
                     lambda t, z: prior(z), lambda t, z: 0.3 + 0.2 * torch.sigmoid(z))
    t = torch.cumsum(0.05 + torch.rand(B, 5, dtype=F64), -1)
    t[2, 3:] += 1.0
    z0 = torch.randn(B, Z, dtype=F64, requires_grad=True)
    params = [*post.parameters(), *prior.parameters()]
    out = []
    for gradients in (Backprop(), Adjoint([*params, context])):
        sol = sdeint(sde, z0, t, Milstein(), 0.03, generator=torch.Generator().manual_seed(3),
                     gradients=gradients)
        loss = (sol.z.sin() ** 2).sum() + sol.running_cost[:, -1].sum()
        out.append(torch.autograd.grad(loss, [z0, raw, *params], retain_graph=True))
    # the SDE reading a detached copy, whose gradient is handed on to the original
    copy = context.detach().requires_grad_(True)
    sde_copy = GirsanovKL(lambda t, z: post(torch.cat([z, copy], -1)),
                          lambda t, z: prior(z), lambda t, z: 0.3 + 0.2 * torch.sigmoid(z))
    sol = sdeint(sde_copy, z0, t, Milstein(), 0.03, generator=torch.Generator().manual_seed(3),
                 gradients=Adjoint([*params, copy], [*params, context]))
    loss = (sol.z.sin() ** 2).sum() + sol.running_cost[:, -1].sum()
    out.append(torch.autograd.grad(loss, [z0, raw, *params], retain_graph=True))
    assert _max_rel(out[1], out[0]) < 1e-9 and _max_rel(out[2], out[0]) < 1e-9
    with pytest.raises(ConfigError, match="one tensor of the same shape"):
        Adjoint([copy], [context, context])
    with pytest.raises(ConfigError, match="not in Adjoint"):
        sol = sdeint(sde, z0, t, Milstein(), 0.03, gradients=Adjoint(params))
        sol.z.sum().backward()


def test_gbm_pathwise_gradient_within_the_discretisation_error():
    """z_T = z0 exp((mu - sigma^2 / 2) T + sigma W_T): d z_T / d(z0, mu, sigma) exact on
    the same path. Both ways of differentiating have the same error, of order dt."""
    B, T = 64, 1.0
    z0 = torch.full((B, 1), 1.0, dtype=F64)
    t = torch.tensor([0.0, T], dtype=F64)
    bm = BrownianTree(0.0, T, (B, 1), seed=11)
    sde = GBM(0.3, 0.5)
    w = bm.value(t)[:, -1]                                                   # (B, 1)
    mu, s = 0.3, 0.5
    zt = z0 * torch.exp((mu - s * s / 2) * T + s * w)
    exact = [zt / z0, (T * zt).sum(), ((w - s * T) * zt).sum()]
    errors = {}
    for dt in (0.02, 0.005):
        for name, gradients in (("backprop", Backprop()), ("adjoint", Adjoint())):
            _, got = _grads(sde, z0, t, Milstein(), dt, gradients, bm,
                            loss=lambda z: z[:, -1].sum())
            errors[name, dt] = _max_rel(got, exact)
    assert errors["adjoint", 0.005] < 0.25 * errors["adjoint", 0.02]        # order 1
    assert errors["adjoint", 0.005] < 5e-3
    for dt in (0.02, 0.005):
        gap = abs(errors["adjoint", dt] - errors["backprop", dt])
        assert gap < 1e-6 * errors["adjoint", dt] + 1e-12


def test_ou_pathwise_gradient_within_the_discretisation_error():
    """z_T = z0 e^{-theta T} + sigma int e^{-theta (T - s)} dW: d z_T / d z0 = e^{-theta T}
    and d z_T / d sigma = (z_T - z0 e^{-theta T}) / sigma on every path."""
    B, T, theta, sigma = 32, 2.0, 1.5, 0.7
    sde = OU(theta, sigma)
    z0 = torch.randn(B, 2, dtype=F64, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([0.0, T], dtype=F64)
    bm = BrownianTree(0.0, T, (B, 2), seed=3)
    z0r = z0.clone().requires_grad_(True)
    z = sdeint(sde, z0r, t, EulerMaruyama(), DT_OU, bm=bm, gradients=Adjoint()).z[:, -1]
    g_z0, _, g_sigma = torch.autograd.grad(z.sum(), [z0r, *sde.parameters()])
    decay = math.exp(-theta * T)
    # Euler's decay factor (1 - theta dt)^N differs from e^{-theta T} by O(dt)
    assert abs(float(g_z0.mean()) - decay) < theta ** 2 * T * DT_OU * decay
    exact_sigma = float(((z.detach() - z0 * decay) / sigma).sum())
    assert abs(float(g_sigma) - exact_sigma) < 0.05 * abs(exact_sigma) + 0.05


def test_adjoint_agrees_with_torchsde_adjoint_on_the_same_path():
    """torchsde's adjoint solves the continuous adjoint SDE; ours differentiates the
    discrete solve: they differ by the discretisation error, O(dt) for Milstein."""
    torchsde = pytest.importorskip("torchsde")
    torch.manual_seed(2)
    sde = NetSDE(z_dim=2).double()
    B, T = 8, 1.0
    z0 = torch.randn(B, 2, dtype=F64)
    t = torch.tensor([0.0, 0.5, T], dtype=F64)

    class Wrapped(nn.Module):
        noise_type, sde_type = "diagonal", "ito"

        def __init__(self):
            super().__init__()
            self.inner = sde

        def f(self, t, y):
            return sde.drift(t, y)

        def g(self, t, y):
            return sde.diffusion(t, y)

    gaps = []
    for dt in (2e-2, 5e-3):
        bm = BrownianTree(0.0, T, (B, 2), seed=4)
        z, ours = _grads(sde, z0, t, Milstein(), dt, Adjoint(), bm)
        y0 = z0.clone().requires_grad_(True)
        ys = torchsde.sdeint_adjoint(Wrapped(), y0, t, bm=torchsde_brownian(bm), dt=dt,
                                     method="milstein", adjoint_method="milstein",
                                     adjoint_params=tuple(sde.parameters()))
        theirs = torch.autograd.grad((ys ** 2).sum(), [y0, *sde.parameters()])
        # the same forward solution (step times rounded differently: ~1e-6)
        assert float((ys.transpose(0, 1).detach() - z).abs().max()) < 1e-4
        gaps.append(_max_rel(ours, theirs))
    # measured: 7.8e-3 at dt = 0.02, 1.9e-3 at dt = 0.005
    assert gaps[1] < 0.35 * gaps[0] and gaps[1] < 4e-3, gaps


def test_adjoint_memory_does_not_grow_with_the_number_of_steps():
    """Bytes autograd keeps for the backward pass: flat in N for the adjoint, linear
    for backprop."""
    torch.manual_seed(0)
    sde = NetSDE().double()
    z0 = torch.randn(32, 3, dtype=F64, requires_grad=True)
    t = torch.tensor([0.0, 1.0], dtype=F64)

    def saved_bytes(gradients, dt):
        total = [0]

        def pack(x):
            total[0] += x.numel() * x.element_size()
            return x
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda x: x):
            sdeint(sde, z0, t, EulerMaruyama(), dt, gradients=gradients)
        return total[0]
    adjoint = [saved_bytes(Adjoint(), dt) for dt in (1 / 50, 1 / 400)]
    backprop = [saved_bytes(Backprop(), dt) for dt in (1 / 50, 1 / 400)]
    # at most twice the recorded states (S, B, Z) = (2, 32, 3) in float64
    assert adjoint[0] == adjoint[1] <= 2 * (2 * 32 * 3 * 8)
    assert backprop[1] > 7 * backprop[0]


def test_reconstruction_failure_and_bad_options_are_clear_errors():
    class Stiff(OU):
        pass
    sde = Stiff(60.0, 0.1)
    z0 = torch.ones(2, 1, dtype=F64, requires_grad=True)
    z = sdeint(sde, z0, torch.tensor([0.0, 1.0], dtype=F64), dt=0.1, gradients=Adjoint()).z
    with pytest.raises(DataError, match="lower dt"):
        z.sum().backward()
    with pytest.raises(ConfigError, match="max_iters"):
        Adjoint(max_iters=0)
    with pytest.raises(ConfigError, match="gradients must be"):
        sdeint(sde, z0, torch.tensor([0.0, 1.0], dtype=F64), gradients="adjoint")
