"""Independent oracle: a linear Gaussian SSM as one dense joint Gaussian over (z, x).

Builds the (T*S + T*D)-dimensional joint mean and covariance directly from the
model equations and conditions on the observed entries with plain linear algebra.
No Kalman recursion is used, so agreement with dynvae.ssm is a real check.
"""

from __future__ import annotations

import torch
from torch.distributions import MultivariateNormal


def joint_moments(m0, P0, A, Q, H, R, T, trans_off=None, emis_off=None):
    """Joint mean/covariance of z_{0:T-1} (T*S) and x_{0:T-1} (T*D).

    A, Q: lists of T (S, S) matrices (entry 0 unused); H, R: lists of T matrices.
    trans_off: optional (T, S) additive transition offsets, emis_off: (T, D).
    """
    S = m0.shape[-1]
    means = [m0]
    # Z = L eps-like construction: z_t = A_t z_{t-1} + c_t + w_t
    # Cov(z_i, z_j) for i >= j is (A_i ... A_{j+1}) P_j.
    P = [P0]
    for t in range(1, T):
        c = trans_off[t] if trans_off is not None else 0.0
        means.append(A[t] @ means[-1] + c)
        P.append(A[t] @ P[-1] @ A[t].T + Q[t])
    blocks = [[None] * T for _ in range(T)]
    for j in range(T):
        prod = torch.eye(S, dtype=m0.dtype)
        for i in range(j, T):
            if i > j:
                prod = A[i] @ prod
            blocks[i][j] = prod @ P[j]
            blocks[j][i] = blocks[i][j].T
    Czz = torch.cat([torch.cat(row, 1) for row in blocks], 0)
    mz = torch.cat(means)
    Hb = torch.block_diag(*H)
    Rb = torch.block_diag(*R)
    mx = Hb @ mz
    if emis_off is not None:
        mx = mx + emis_off.reshape(-1)
    return mz, Czz, mx, Hb @ Czz @ Hb.T + Rb, Hb @ Czz


def condition(mz, Czz, mx, Cxx, Cxz, x, mask, S, T=None):
    """Posterior marginals, lag-one cross covariances and log p(x_obs) by dense algebra.

    x, mask: (T, D), or flat (sum of D_t,) with ``T`` given when D varies over time.
    Returns (log_lik, mean (T, S), cov (T, S, S), cross (T-1, S, S)).
    """
    T = x.shape[0] if T is None else T
    o = mask.reshape(-1)
    xo = x.reshape(-1)[o]
    Coo = Cxx[o][:, o]
    ll = MultivariateNormal(mx[o], Coo).log_prob(xo)
    gain = torch.linalg.solve(Coo, Cxz[o]).T            # (T*S, n_obs)
    mean = mz + gain @ (xo - mx[o])
    cov = Czz - gain @ Cxz[o]
    blocks = torch.stack([cov[t * S:(t + 1) * S, t * S:(t + 1) * S] for t in range(T)])
    cross = torch.stack([cov[t * S:(t + 1) * S, (t - 1) * S:t * S] for t in range(1, T)])
    return ll, mean.reshape(T, S), blocks, cross


def dense_posterior(model, x, mask, u=None):
    """Dense-algebra posterior of one unbatched ``model`` (parameters without batch
    dims) for one sequence x, mask (T, D), u (T, U); same return as :func:`condition`.
    Only parameter lookups of the model are used, no Kalman recursion."""
    T, S = x.shape[0], model.state_dim
    per_step = lambda name: [model.param_at(name, t) for t in range(T)]
    trans_off, emis_off = model.offsets(T, u)
    moments = joint_moments(model.initial_mean, model.initial_cov, per_step("transition_matrix"),
                            per_step("transition_cov"), per_step("emission_matrix"),
                            per_step("emission_cov"), T, trans_off, emis_off)
    return condition(*moments, x, mask, S)
