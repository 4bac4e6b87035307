"""Expectation-maximisation for the linear Gaussian SSM: pure functions.

E-step: the RTS smoother gives the posterior moments of z; the expected
sufficient statistics are the summed second moments of augmented vectors

    transition  xi_t = [z_t; z_{t-1}; u_t; 1]     (t = 1..len-1)
    emission    xi_t = [x_t; z_t;     u_t; 1]     (t = 0..len-1)

Partly observed x_t: the missing entries are treated as latent too, with their
conditional moments given z_t and the observed entries under the current
parameters (Shumway & Stoffer 1982, "An approach to time series smoothing and
forecasting using the EM algorithm", sec. 3):

    x_m | z, x_o ~ N(H_m z + c_m + G (x_o - H_o z - c_o), R_mm - G R_om),  G = R_mo R_oo^+

so every row of E[(x_t - H z_t - c_t)(x_t - H z_t - c_t)^T] is available and the
M-step for H, R (full or diagonal) is an ordinary least-squares regression on
second moments. The observed-data log-likelihood never decreases.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

from dynvae.ssm import FilterResult, LinearGaussianSSM, SmootherResult, rts_smoother


class EMStatistics(NamedTuple):
    """Expected sufficient statistics of one E-step.

    transition: (2S+U+1, 2S+U+1) sum over valid transitions of E[xi xi^T].
    n_transitions: () number of transitions summed.
    emission: (D+S+U+1, D+S+U+1) sum over valid steps of E[xi xi^T].
    n_steps: () number of steps summed.
    initial_mean: (S,) average over sequences of E[z_0 | x].
    initial_cov: (S, S) average of E[(z_0 - initial_mean)(z_0 - initial_mean)^T | x].
    log_likelihood: (B,) log p(x) under the parameters of the E-step (full likelihood).
    filtered: the Kalman filter pass of the E-step.
    """

    transition: Tensor
    n_transitions: Tensor
    emission: Tensor
    n_steps: Tensor
    initial_mean: Tensor
    initial_cov: Tensor
    log_likelihood: Tensor
    filtered: FilterResult


def _outer_plus_cov(mean: Tensor, cov: Tensor) -> Tensor:
    """E[xi xi^T] = Cov + mean mean^T for (..., n) means and (..., n, n) covariances."""
    return cov + mean.unsqueeze(-1) * mean.unsqueeze(-2)


def missing_entry_moments(x: Tensor, mask: Tensor, offset: Tensor, H: Tensor, R: Tensor
                          ) -> tuple[Tensor, Tensor, Tensor]:
    """Write x_t = L_t z_t + l_t + e_t, e_t ~ N(0, E_t) independent of z_t given x_obs.

    Observed rows have L = 0, l = x, no noise; missing rows follow the conditional
    Gaussian in the module docstring.

    Args: x, mask, offset: (B, T, D) values, bool mask, emission offset c_t.
          H: (D, S).  R: (D, D).
    Returns: L (B, T, D, S), l (B, T, D), E (B, T, D, D).
    """
    m = mask.to(x.dtype)                                          # (B, T, D)
    mo = m.unsqueeze(-1) * m.unsqueeze(-2)                        # observed x observed
    R_obs = R * mo + torch.diag_embed(1.0 - m)                    # (B, T, D, D)
    R_mis_obs = R * ((1.0 - m).unsqueeze(-1) * m.unsqueeze(-2))   # rows missing, cols observed
    # pseudo-inverse: a fitted R may be singular (an MLE on the boundary), and the
    # conditional Gaussian then uses the generalised inverse of R_oo
    gain = R_mis_obs @ torch.linalg.pinv(R_obs, hermitian=True)   # (B, T, D, D)
    H_obs = H * m.unsqueeze(-1)                                   # (B, T, D, S)
    L = (1.0 - m).unsqueeze(-1) * (H - gain @ H_obs)
    resid = ((x - offset) * m).unsqueeze(-1)
    ell = m * x + (1.0 - m) * (offset + (gain @ resid).squeeze(-1))
    E = (R - gain @ R_mis_obs.transpose(-1, -2)) * (
        (1.0 - m).unsqueeze(-1) * (1.0 - m).unsqueeze(-2))
    return L, ell, E


def e_step(ssm: LinearGaussianSSM, x: Tensor, mask: Tensor, lengths: Tensor,
           u: Tensor | None, smoother: Callable[..., SmootherResult] = rts_smoother
           ) -> EMStatistics:
    """Expected sufficient statistics under ``ssm`` (time-invariant parameters).

    Args: x, mask: (B, T, D); lengths: (B,); u: optional (B, T, U), zero beyond lengths.
        smoother: an RTS smoother with the signature of dynvae.ssm.rts_smoother.
    """
    B, T, _ = x.shape
    sm = smoother(ssm, x, mask, u)
    m, P, C = sm.smoothed_mean, sm.smoothed_cov, sm.smoothed_cross_cov   # (B,T,S), (B,T,S,S)
    S = m.shape[-1]
    ones = torch.ones(B, T, 1, dtype=x.dtype, device=x.device)
    u_aug = ones if u is None else torch.cat([u, ones], -1)             # (B, T, U+1)
    n_aug = u_aug.shape[-1]
    valid = (torch.arange(T, device=x.device)[None, :] < lengths[:, None]).to(x.dtype)

    # transition: xi = [z_t; z_{t-1}; u_t; 1], t = 1..T-1
    mean_tr = torch.cat([m[:, 1:], m[:, :-1], u_aug[:, 1:]], -1)
    cov_tr = torch.zeros(B, T - 1, 2 * S + n_aug, 2 * S + n_aug, dtype=x.dtype, device=x.device)
    cov_tr[..., :S, :S] = P[:, 1:]
    cov_tr[..., :S, S:2 * S] = C[:, 1:]
    cov_tr[..., S:2 * S, :S] = C[:, 1:].transpose(-1, -2)
    cov_tr[..., S:2 * S, S:2 * S] = P[:, :-1]
    w_tr = valid[:, 1:]
    transition = (_outer_plus_cov(mean_tr, cov_tr) * w_tr[..., None, None]).sum((0, 1))

    # emission: xi = [x_t; z_t; u_t; 1] with missing x entries in conditional form
    _, emis_off = ssm.offsets(T, u)
    offset = torch.zeros_like(x) if emis_off is None else emis_off.expand_as(x)
    L, ell, E = missing_entry_moments(x, mask, offset, ssm.emission_matrix, ssm.emission_cov)
    LP = L @ P                                                           # (B, T, D, S)
    D = x.shape[-1]
    mean_em = torch.cat([(L @ m.unsqueeze(-1)).squeeze(-1) + ell, m, u_aug], -1)
    cov_em = torch.zeros(B, T, D + S + n_aug, D + S + n_aug, dtype=x.dtype, device=x.device)
    cov_em[..., :D, :D] = LP @ L.transpose(-1, -2) + E
    cov_em[..., :D, D:D + S] = LP
    cov_em[..., D:D + S, :D] = LP.transpose(-1, -2)
    cov_em[..., D:D + S, D:D + S] = P
    emission = (_outer_plus_cov(mean_em, cov_em) * valid[..., None, None]).sum((0, 1))

    m0 = m[:, 0].mean(0)
    d0 = m[:, 0] - m0
    cov0 = (P[:, 0] + d0.unsqueeze(-1) * d0.unsqueeze(-2)).mean(0)
    return EMStatistics(transition, w_tr.sum(), emission, valid.sum(), m0, cov0,
                        sm.log_likelihood, sm.filtered)


def regression_m_step(moment: Tensor, n: Tensor, target: Tensor, features: Tensor | None
                      ) -> tuple[Tensor | None, Tensor]:
    """Least squares of ``target @ xi`` on ``features @ xi`` from summed E[xi xi^T].

    Maximises -1/2 sum_t E[log|Q| + r_t^T Q^-1 r_t], r_t = target xi_t - W features xi_t,
    over W and Q: W = S_yf S_ff^-1, Q = (S_yy - W S_fy) / n. Rows share regressors, so W
    is the same whether Q is full or diagonal.

    Args: moment: (n_xi, n_xi); target: (n_y, n_xi); features: (n_f, n_xi) or None.
    Returns: W (n_y, n_f) or None, and the residual covariance (n_y, n_y).
    """
    S_yy = target @ moment @ target.T
    if features is None or features.shape[0] == 0:
        return None, S_yy / n
    S_yf = target @ moment @ features.T
    S_ff = features @ moment @ features.T
    W = torch.linalg.solve(S_ff, S_yf.T).T
    cov = (S_yy - W @ S_yf.T) / n
    return W, 0.5 * (cov + cov.T)
