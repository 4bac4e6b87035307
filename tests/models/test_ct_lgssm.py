"""Continuous-time LGSSM: dense-Gaussian oracle on irregular times (transitions from
scipy's expm and Lyapunov solver, not Van Loan), reduction to the discrete local level on
a unit grid, Fisher gradients, EM, imputation at added times."""

import numpy as np
import pytest
import torch

from dynvae import SequenceBatch
from dynvae.models import lgssm_fit
from dynvae.models.ct_lgssm import ContinuousLGSSM, distinct_steps
from dynvae.models.lgssm import LGSSM, Config
from tests.reference.dense_lgssm import joint_moments

scipy_linalg = pytest.importorskip("scipy.linalg")


def irregular_batch(B=3, T=9, D=2, U=1, seed=0, missing=0.3):
    g = torch.Generator().manual_seed(seed)
    t = torch.cumsum(torch.rand(B, T, generator=g, dtype=torch.float64) * 2 + 0.1, 1)
    x = torch.randn(B, T, D, generator=g, dtype=torch.float64)
    mask = torch.rand(B, T, D, generator=g) > missing
    mask[:, 0, 0] = True
    lengths = torch.tensor([T, T - 2, T - 1][:B])
    valid = torch.arange(T)[None] < lengths[:, None]
    mask &= valid[..., None]
    u = None if U == 0 else torch.randn(B, T, U, generator=g, dtype=torch.float64
                                        ) * valid[..., None]
    return SequenceBatch(torch.where(mask, x, 0.0), mask, t, lengths, u)


def random_ct(transition="linear", D=2, U=1, seed=0, **kw):
    torch.manual_seed(seed)
    config = Config(time="continuous", transition=transition, emission="linear",
                    initial="learned", state_dim=2, transition_bias=True,
                    emission_bias=True, **kw)
    model = LGSSM.from_config(config, D, U)
    assert isinstance(model, ContinuousLGSSM)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(0.3 * torch.randn(p.shape, generator=g, dtype=p.dtype))
        if transition == "linear":                  # a stable drift, for the Lyapunov oracle
            model.transition.assign(torch.tensor([[-0.7, 0.4], [-0.3, -0.5]],
                                                 dtype=torch.float64))
    return model


def oracle_transitions(model, dt):
    """A = expm(F dt), Q = Pinf - A Pinf A^T (Lyapunov), Phi = F^{-1}(A - I), by scipy."""
    F = model.transition().detach().numpy()
    Qc = model.transition_cov().detach().numpy()
    Pinf = scipy_linalg.solve_continuous_lyapunov(F, -Qc)
    out = []
    for step in dt:
        A = scipy_linalg.expm(F * step)
        out.append((A, Pinf - A @ Pinf @ A.T, np.linalg.solve(F, A - np.eye(len(F)))))
    return out


def test_log_likelihood_smoother_and_forecast_equal_dense_oracle():
    model = random_ct("linear")
    batch = irregular_batch()
    t_future = batch.t.gather(1, (batch.lengths - 1)[:, None]) + torch.tensor([[0.3, 2.5]])
    u_future = torch.randn(3, 2, 1, dtype=torch.float64)
    with torch.no_grad():
        ll = model.log_likelihood(batch)
        rec = model.reconstruct(batch)
        fc = model.forecast(batch, t_future, u_future)
    B_in, b = model.transition_input().detach(), model.transition_bias().detach()[:, 0]
    H, R = model.emission().detach(), model.emission_cov().detach()
    D_in, d = model.emission_input().detach(), model.emission_bias().detach()[:, 0]
    m0, P0 = (v.detach() for v in model.initial.prior())
    for i in range(3):
        n = int(batch.lengths[i])
        t = torch.cat([batch.t[i, :n], t_future[i]])
        u = torch.cat([batch.u[i, :n], u_future[i]])
        steps = oracle_transitions(model, np.diff(t.numpy(), prepend=t[0].item()))
        A = [torch.tensor(a) for a, _, _ in steps]
        Q = [torch.tensor(q) for _, q, _ in steps]
        off = torch.stack([torch.tensor(p) @ (B_in @ u[k] + b) for k, (_, _, p) in
                           enumerate(steps)])
        N = n + 2
        mz, Czz, mx, Cxx, Cxz = joint_moments(m0, P0, A, Q, [H] * N, [R] * N, N, off,
                                              u @ D_in.T + d)
        mask = torch.cat([batch.mask[i, :n], torch.zeros(2, 2, dtype=torch.bool)]).reshape(-1)
        xo = batch.x[i, :n].reshape(-1)[batch.mask[i, :n].reshape(-1)]
        Coo = Cxx[mask][:, mask]
        dense_ll = torch.distributions.MultivariateNormal(mx[mask], Coo).log_prob(xo)
        torch.testing.assert_close(ll[i], dense_ll, rtol=1e-10, atol=1e-9)
        gain = torch.linalg.solve(Coo, Cxx[mask]).T
        mean = (mx + gain @ (xo - mx[mask])).reshape(N, 2)
        std = torch.diagonal(Cxx - gain @ Cxx[mask]).sqrt().reshape(N, 2)
        miss = ~batch.mask[i, :n]
        torch.testing.assert_close(rec.mean[i, :n][miss], mean[:n][miss], rtol=1e-8, atol=1e-9)
        torch.testing.assert_close(rec.std[i, :n][miss], std[:n][miss], rtol=1e-8, atol=1e-9)
        torch.testing.assert_close(fc.mean[i], mean[n:], rtol=1e-8, atol=1e-9)
        torch.testing.assert_close(fc.std[i], std[n:], rtol=1e-8, atol=1e-9)


def test_brownian_levels_on_a_unit_grid_equal_the_discrete_local_level():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 30, 3, generator=g, dtype=torch.float64).cumsum(1)
    batch = SequenceBatch.from_tensor(x, t=torch.arange(30, dtype=torch.float64) * 0.25)
    discrete, continuous = LGSSM(Config(), 3), LGSSM.from_config(Config(time="continuous"), 3)
    discrete.initialize_from_data(batch)
    continuous.load_state_dict(discrete.state_dict(), strict=False)
    with torch.no_grad():                       # Q per step 0.25 = Q_c * 0.25
        continuous.transition_cov.assign(discrete.transition_cov() / 0.25)
        torch.testing.assert_close(continuous.log_likelihood(batch),
                                   discrete.log_likelihood(batch), rtol=1e-12, atol=1e-9)


@pytest.mark.parametrize("transition", ["random_walk", "linear"])
@pytest.mark.parametrize("initial", ["learned", "diffuse"])
def test_fisher_gradient_equals_autograd_gradient(transition, initial):
    batch = irregular_batch()
    if initial == "learned":
        model = random_ct(transition)
    else:
        model = LGSSM.from_config(Config(time="continuous", transition=transition,
                                         transition_bias=True, emission_bias=True,
                                         diffuse_kappa=100.0), 2, 1)
        model.initialize_from_data(batch)
    model.zero_grad()
    model.log_likelihood(batch).sum().backward()
    reference = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    value = lgssm_fit.fisher_objective(model, batch)
    value.backward()
    torch.testing.assert_close(value.detach(), model.log_likelihood(batch).sum().detach())
    for p, ref in zip(model.parameters(), reference, strict=True):
        torch.testing.assert_close(p.grad, ref, rtol=1e-9, atol=1e-10)
        assert ref.abs().max() > 0 or p.numel() == 0


@pytest.mark.parametrize("transition", ["random_walk", "linear"])
def test_em_never_decreases_the_log_likelihood(transition):
    batch = irregular_batch(B=3, T=20, seed=2)
    model = random_ct(transition)
    model.initialize_from_data(batch)
    lls = [r["log_likelihood"] for r in model.fit_em(batch, n_iter=8, tol=0, progress=False)]
    assert (np.diff(lls) >= -1e-8 * abs(lls[-1])).all(), lls
    assert lls[-1] > lls[0] + 1.0


def test_distinct_steps_share_transitions_up_to_round_off():
    dt = torch.tensor([0.1, 0.1 + 1e-15, 0.2, 0.30000000000000004, 0.3], dtype=torch.float64)
    steps, index = distinct_steps(dt, 0.1)
    assert steps.shape == (3,)
    torch.testing.assert_close(steps[index], dt, rtol=1e-9, atol=0)


def test_sampling_follows_the_transition_of_each_interval():
    model = LGSSM.from_config(Config(time="continuous", initial="learned"), 1)
    with torch.no_grad():
        model.transition_cov.assign(torch.tensor([[2.0]], dtype=torch.float64))
        model.emission_cov.assign(torch.tensor([[1e-8]], dtype=torch.float64))
        model.initial.assign(torch.zeros(1, dtype=torch.float64),
                             torch.tensor([[1e-8]], dtype=torch.float64))
    torch.manual_seed(0)
    x = model.sample(20000, torch.tensor([0.0, 0.5, 3.0]))[..., 0]    # Brownian, Q_c = 2
    increments = torch.diff(x, dim=1).var(0)
    torch.testing.assert_close(increments, torch.tensor([1.0, 5.0], dtype=torch.float64),
                               rtol=0.05, atol=0)
