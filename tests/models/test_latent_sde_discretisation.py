"""The latent SDE's training ELBO and its IWAE bound score the same discretised model.

With the Euler-Maruyama solver both are rebuilt here by hand from one Brownian path on
the solver's grid (one step per observation interval): every posterior step is
z_{k+1} = z_k + f_q h_k + g dW_k, the ELBO's path KL is sum_k |u_k|^2 h_k / 2 and the
IWAE's log dP/dQ is -sum_k (u_k . dW_k + |u_k|^2 h_k / 2), u_k = (f_q - f_p) / g at
(t_k, z_k). These are the Euler-Maruyama transition densities of posterior and prior,
so both bound log p(x) of the same Euler-Maruyama prior (docs/sde.md, "Which model the
bounds score"). A change of solver, grid or noise handling in either breaks the test.
"""

import torch

from dynvae.models.latent_sde import solver_grid
from tests.models.test_latent_sde import LENGTHS, fixed_noise, irregular_batch, make_model


def hand_rebuilt_terms(model, batch, bm, z0_noise):
    """(z (B, T, Z), path KL of each latent dimension (B, Z), u . dW summed (B,)) from the
    Euler recursion."""
    prepared = model._prepare(batch)
    start = model.posterior_start(prepared, 1, z0_noise)
    grid = solver_grid(prepared, 1.0)                                     # (B, T)
    dW = bm.increments(grid)[0]                                           # (B, T-1, Z)
    B, T = grid.shape
    z = [start.z0]                                                        # (B, Z)
    kl = torch.zeros(B, start.z0.shape[-1], dtype=torch.float64)
    stochastic = torch.zeros(B, dtype=torch.float64)
    for k in range(T - 1):
        zk, h = z[-1], (grid[:, k + 1] - grid[:, k])[:, None]             # (B, Z), (B, 1)
        f_q = model.posterior_drift(torch.cat([zk, start.contexts[:, k + 1]], -1))
        g = model.diffusion(zk)
        u = (f_q - model.prior_drift(zk)) / g
        live = (k + 1 < prepared.lengths).to(h)                           # scored interval
        kl = kl + live[:, None] * 0.5 * u.pow(2) * h
        stochastic = stochastic + live * (u * dW[:, k]).sum(-1)
        z.append(zk + f_q * h + g * dW[:, k])
    return torch.stack(z, 1), kl, stochastic


def test_elbo_and_iwae_weights_follow_the_same_euler_steps():
    model, batch = make_model(dt=None), irregular_batch()
    bm, eps = fixed_noise(batch, dt=1.0)
    with torch.no_grad():
        z, path_kl_dims, stochastic = hand_rebuilt_terms(model, batch, bm, eps)
        path_kl = path_kl_dims.sum(-1)
        prepared = model._prepare(batch)
        elbo_paths = model.posterior_paths(prepared, 1, bm=bm, z0_noise=eps)
        iwae_paths = model.log_ratio_paths(prepared, 1, bm=bm, z0_noise=eps)
        terms = model.elbo(batch, bm=bm, z0_noise=eps)
        log_w = model.log_weights(batch, 1, bm=bm, z0_noise=eps)[0]       # (B,)
    for b, L in enumerate(LENGTHS):
        torch.testing.assert_close(elbo_paths.z[0, b, :L], z[b, :L], rtol=0, atol=1e-10)
        torch.testing.assert_close(iwae_paths.z[0, b, :L], z[b, :L], rtol=0, atol=1e-10)
    torch.testing.assert_close(terms.kl, elbo_paths.kl0 + path_kl, rtol=0, atol=1e-10)
    # the KL of each latent dimension: KL(q(z_0) || p(z_0)) and sum_k u_k,i^2 h_k / 2
    torch.testing.assert_close(terms.kl_dims, elbo_paths.kl0_dims + path_kl_dims, rtol=0,
                               atol=1e-10)
    assert bool((path_kl_dims > 1e-6).all())                              # not trivially 0
    # log w = log p(x | z) + log p(z_0) / q(z_0) - sum (u . dW + |u|^2 h / 2)
    expected = (terms.log_lik + elbo_paths.log_ratio0[0] - path_kl - stochastic)
    torch.testing.assert_close(log_w, expected, rtol=0, atol=1e-10)
    assert bool((stochastic.abs() > 1e-3).all())                          # not trivially 0


def test_fine_steps_keep_elbo_and_iwae_paths_identical():
    """With dt below the observation gaps (several steps per interval) the ELBO's and
    the IWAE's posterior paths still coincide at every observation time."""
    model, batch = make_model(), irregular_batch()
    bm, eps = fixed_noise(batch)
    with torch.no_grad():
        prepared = model._prepare(batch)
        a = model.posterior_paths(prepared, 2, bm=_two(bm, batch), z0_noise=_eps2(eps))
        b = model.log_ratio_paths(prepared, 2, bm=_two(bm, batch), z0_noise=_eps2(eps))
    for i, L in enumerate(LENGTHS):
        torch.testing.assert_close(a.z[:, i, :L], b.z[:, i, :L], rtol=0, atol=1e-10)


def test_milstein_elbo_and_the_iwae_of_the_euler_model():
    """With solver="milstein" the IWAE weights stay those of the Euler-Maruyama model
    on the same grid (as docs/sde.md states): its paths are the Euler model's, not the
    Milstein ELBO's."""
    batch = irregular_batch()
    bm, eps = fixed_noise(batch)
    euler, milstein = make_model(), make_model(solver="milstein")
    with torch.no_grad():
        prepared = euler._prepare(batch)
        iwae = milstein.log_ratio_paths(prepared, 1, bm=bm, z0_noise=eps).z
        euler_z = euler.posterior_paths(prepared, 1, bm=bm, z0_noise=eps).z
        milstein_z = milstein.posterior_paths(prepared, 1, bm=bm, z0_noise=eps).z
    for i, L in enumerate(LENGTHS):
        torch.testing.assert_close(iwae[0, i, :L], euler_z[0, i, :L], rtol=0, atol=1e-10)
    assert float((milstein_z - euler_z).abs().max()) > 1e-6


def _two(bm, batch):
    """A path of 2 * B rows whose second half repeats the first (K = 2 samples)."""
    return bm.rows(list(range(batch.batch_size)) * 2)


def _eps2(eps):
    return torch.cat([eps, -eps], 0)                                     # (2, B, Z)
