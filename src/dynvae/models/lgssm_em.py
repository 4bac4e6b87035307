"""Expected sufficient statistics of the linear Gaussian SSM: pure functions.

E-step: the RTS smoother gives the posterior moments of z; the expected sufficient
statistics are the summed second moments of augmented vectors

    transition  xi_t = [z_t; z_{t-1}; u_t; 1]     (t = 1..len-1)
    emission    xi_t = [x_t; z_t;     u_t; 1]     (t = 0..len-1)

Transition moments are summed per *group* of steps that share one transition (A, Q):
one group for the discrete-time model, one per distinct time step for the
continuous-time model, whose A(dt) and Q(dt) depend on the step.

Partly observed x_t: the missing entries are treated as latent too, with their
conditional moments given z_t and the observed entries under the current
parameters (Shumway & Stoffer 1982, "An approach to time series smoothing and
forecasting using the EM algorithm", sec. 3):

    x_m | z, x_o ~ N(H_m z + c_m + G (x_o - H_o z - c_o), R_mm - G R_om),  G = R_mo R_oo^+

so every row of E[(x_t - H z_t - c_t)(x_t - H z_t - c_t)^T] is available. H and R are
time-invariant, so G depends only on which entries are observed: it is computed once
per distinct missing pattern, and all sums are matrix products over the rows of a
pattern instead of per-step (B, T, n, n) tensors.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

from dynvae.ssm import FilterResult, LinearGaussianSSM, SmootherResult, rts_smoother


class EMStatistics(NamedTuple):
    """Expected sufficient statistics of one E-step.

    transition: (K, 2S+U+1, 2S+U+1) sum over the valid transitions of group k of
        E[xi xi^T].
    n_transitions: (K,) number of transitions summed per group.
    emission: (D+S+U+1, D+S+U+1) sum over valid steps of E[xi xi^T].
    n_steps: () number of steps summed.
    initial_mean: (S,) average over sequences of E[z_0 | x].
    initial_cov: (S, S) average of E[(z_0 - initial_mean)(z_0 - initial_mean)^T | x].
    n_sequences: () number of sequences B.
    log_likelihood: (B,) log p(x) under the parameters of the E-step (full likelihood).
    filtered: the Kalman filter pass of the E-step.
    smoothed: the smoother pass (posterior moments of z).
    """

    transition: Tensor
    n_transitions: Tensor
    emission: Tensor
    n_steps: Tensor
    initial_mean: Tensor
    initial_cov: Tensor
    n_sequences: Tensor
    log_likelihood: Tensor
    filtered: FilterResult
    smoothed: SmootherResult


def conditional_gain(mask: Tensor, H: Tensor, R: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The conditional Gaussian of the missing entries for observed-entry masks.

    Args: mask: (*, D) bool, True where observed.  H: (D, S).  R: (D, D).
    Returns: G (*, D, D) with rows of missing entries equal to R_mo R_oo^+ (zero
    elsewhere), L (*, D, S) = rows of missing entries of H - G H_o, and E (*, D, D) the
    conditional covariance R_mm - G R_om (zero outside the missing block).
    """
    m = mask.to(H.dtype)                                          # (*, D)
    mo = m.unsqueeze(-1) * m.unsqueeze(-2)                        # observed x observed
    R_obs = R * mo + torch.diag_embed(1.0 - m)                    # (*, D, D)
    R_mis_obs = R * ((1.0 - m).unsqueeze(-1) * m.unsqueeze(-2))   # rows missing, cols observed
    # pseudo-inverse: a fitted R may be singular (an MLE on the boundary), and the
    # conditional Gaussian then uses the generalised inverse of R_oo
    gain = R_mis_obs @ torch.linalg.pinv(R_obs, hermitian=True)   # (*, D, D)
    L = (1.0 - m).unsqueeze(-1) * (H - gain @ (H * m.unsqueeze(-1)))
    E = (R - gain @ R_mis_obs.transpose(-1, -2)) * (
        (1.0 - m).unsqueeze(-1) * (1.0 - m).unsqueeze(-2))
    return gain, L, E


def _completed_offset(x: Tensor, mask: Tensor, offset: Tensor, gain: Tensor) -> Tensor:
    """l = x on observed entries, c_m + G (x_o - c_o) on missing ones (*, D)."""
    m = mask.to(x.dtype)
    resid = ((x - offset) * m).unsqueeze(-1)
    return m * x + (1.0 - m) * (offset + (gain @ resid).squeeze(-1))


def missing_entry_moments(x: Tensor, mask: Tensor, offset: Tensor, H: Tensor, R: Tensor
                          ) -> tuple[Tensor, Tensor, Tensor]:
    """Write x_t = L_t z_t + l_t + e_t, e_t ~ N(0, E_t) independent of z_t given x_obs.

    Observed rows have L = 0, l = x, no noise; missing rows follow the conditional
    Gaussian in the module docstring.

    Args: x, mask, offset: (B, T, D) values, bool mask, emission offset c_t.
          H: (D, S).  R: (D, D).
    Returns: L (B, T, D, S), l (B, T, D), E (B, T, D, D).
    """
    gain, L, E = conditional_gain(mask, H, R)
    return L, _completed_offset(x, mask, offset, gain), E


def missing_patterns(mask: Tensor) -> tuple[Tensor, Tensor]:
    """Distinct rows of a (N, D) bool mask (n_pat, D) and each row's pattern (N,)."""
    D = mask.shape[-1]
    if D > 62:
        return torch.unique(mask, dim=0, return_inverse=True)
    weights = 2 ** torch.arange(D, device=mask.device, dtype=torch.long)
    codes, which = torch.unique((mask.to(torch.long) * weights).sum(-1), return_inverse=True)
    return (codes[:, None] & weights) > 0, which


def _group_sum(values: Tensor, index: Tensor, n_groups: int) -> Tensor:
    """Sum rows of values (N, *shape) by group index (N,) -> (n_groups, *shape)."""
    if n_groups == 1:
        return values.sum(0, keepdim=True)
    out = values.new_zeros((n_groups, *values.shape[1:]))
    return out.index_add_(0, index, values)


def _weighted_sum(w: Tensor, v: Tensor, index: Tensor, n_groups: int) -> Tensor:
    """sum over (b, t) of w[b, t] v[b, t] per group index[b, t]: w (B, T), v (B, T, *e)
    contiguous -> (n_groups, *e); one matrix-vector product for one group."""
    flat = v.reshape(w.numel(), -1)                                      # (B T, e)
    if n_groups == 1:
        return (w.reshape(1, -1) @ flat).reshape(1, *v.shape[2:])
    out = flat.new_zeros((n_groups, flat.shape[1]))
    out.index_add_(0, index.reshape(-1), flat * w.reshape(-1, 1))
    return out.reshape(n_groups, *v.shape[2:])


def _transition_moments(m: Tensor, P: Tensor, C: Tensor, u_aug: Tensor, valid: Tensor,
                        groups: Tensor | None, n_groups: int) -> tuple[Tensor, Tensor]:
    """(K, 2S+U+1, 2S+U+1) summed E[xi xi^T] of xi = [z_t; z_{t-1}; u_t; 1] and (K,)
    counts over the valid transitions t >= 1 (see the module docstring)."""
    S = m.shape[-1]
    w = valid[:, 1:].to(m.dtype)                                         # (B, T-1)
    g = (torch.zeros_like(w, dtype=torch.long) if groups is None
         else groups[:, 1:].to(torch.long))                              # (B, T-1)
    mean = torch.cat([m[:, 1:], m[:, :-1], u_aug[:, 1:]], -1)           # (B, T-1, n)
    n = mean.shape[-1]
    rows = mean.reshape(-1, n)
    if n_groups == 1:
        out = ((rows * w.reshape(-1, 1)).T @ rows).unsqueeze(0)          # (1, n, n)
    else:
        out = _weighted_sum(w, mean.unsqueeze(-1) * mean.unsqueeze(-2), g, n_groups)
    # weights and groups on the full (B, T) grid: step t as "now" (t >= 1) and as
    # "previous" (t <= T-2), so P and C are summed without copying slices
    pad = lambda v: torch.zeros_like(v[:, :1])
    w_now, w_prev = torch.cat([pad(w), w], 1), torch.cat([w, pad(w)], 1)
    g_now, g_prev = torch.cat([pad(g), g], 1), torch.cat([g, pad(g)], 1)
    cov = torch.zeros(n_groups, n, n, dtype=m.dtype, device=m.device)
    cov[:, :S, :S] = _weighted_sum(w_now, P, g_now, n_groups)
    cov[:, S:2 * S, S:2 * S] = _weighted_sum(w_prev, P, g_prev, n_groups)
    cross = _weighted_sum(w_now, C, g_now, n_groups)                     # Cov(z_t, z_{t-1})
    cov[:, :S, S:2 * S], cov[:, S:2 * S, :S] = cross, cross.transpose(-1, -2)
    counts = torch.bincount(g.reshape(-1), weights=w.reshape(-1), minlength=n_groups)
    return out + cov, counts.to(m.dtype)


def _emission_moments(x: Tensor, mask: Tensor, offset: Tensor, m: Tensor, P: Tensor,
                      u_aug: Tensor, valid: Tensor, H: Tensor, R: Tensor) -> Tensor:
    """(D+S+U+1, D+S+U+1) summed E[xi xi^T] of xi = [x_t; z_t; u_t; 1] over valid steps,
    missing x entries in conditional form, one conditional per missing pattern (rows
    observed in full have L = 0, E = 0 and need none)."""
    D, S = x.shape[-1], m.shape[-1]
    w = valid.to(x.dtype)                                                # (B, T)
    partial = valid & ~mask.all(-1)                                      # rows with gaps
    x_mean = x.clone()
    cov = torch.zeros(D + S + u_aug.shape[-1], D + S + u_aug.shape[-1], dtype=x.dtype,
                      device=x.device)
    if bool(partial.any()):
        ms, Ps = m[partial], P[partial]                                  # (N, S), (N, S, S)
        patterns, which = missing_patterns(mask[partial])
        gain, L, E = conditional_gain(patterns, H, R)                    # (n_pat, ·)
        ell = _completed_offset(x[partial], mask[partial], offset[partial], gain[which])
        x_mean[partial] = (L[which] @ ms.unsqueeze(-1)).squeeze(-1) + ell
        n_pat = patterns.shape[0]
        P_sum = _group_sum(Ps.reshape(Ps.shape[0], -1), which, n_pat).reshape(n_pat, S, S)
        count = torch.bincount(which, minlength=n_pat).to(x.dtype)
        LP = L @ P_sum                                                   # (n_pat, D, S)
        cov[:D, :D] = (LP @ L.transpose(-1, -2) + count[:, None, None] * E).sum(0)
        cov[:D, D:D + S] = LP.sum(0)
        cov[D:D + S, :D] = LP.sum(0).T
    cov[D:D + S, D:D + S] = (w.reshape(1, -1) @ P.reshape(w.numel(), -1)).reshape(S, S)
    rows = torch.cat([x_mean, m, u_aug], -1).reshape(-1, cov.shape[0])  # (B T, n)
    return (rows * w.reshape(-1, 1)).T @ rows + cov


def e_step(ssm: LinearGaussianSSM, x: Tensor, mask: Tensor, lengths: Tensor,
           u: Tensor | None, smoother: Callable[..., SmootherResult] = rts_smoother,
           groups: Tensor | None = None, n_groups: int = 1) -> EMStatistics:
    """Expected sufficient statistics under ``ssm`` (time-invariant H, R; the transition
    may vary between groups of steps).

    Args: x, mask: (B, T, D); lengths: (B,); u: optional (B, T, U), zero beyond lengths.
        smoother: an RTS smoother with the signature of dynvae.ssm.rts_smoother.
        groups: optional (B, T) long, the transition group of step t (entry 0 unused);
        None puts every transition in one group. n_groups: K.
    """
    B, T, _ = x.shape
    sm = smoother(ssm, x, mask, u)
    m, P, C = sm.smoothed_mean, sm.smoothed_cov, sm.smoothed_cross_cov   # (B,T,S), (B,T,S,S)
    ones = torch.ones(B, T, 1, dtype=x.dtype, device=x.device)
    u_aug = ones if u is None else torch.cat([u, ones], -1)             # (B, T, U+1)
    valid = torch.arange(T, device=x.device)[None, :] < lengths[:, None]  # (B, T)
    transition, n_tr = _transition_moments(m, P, C, u_aug, valid, groups, n_groups)
    _, emis_off = ssm.offsets(T, u)
    offset = torch.zeros_like(x) if emis_off is None else emis_off.expand_as(x)
    emission = _emission_moments(x, mask, offset, m, P, u_aug, valid, ssm.emission_matrix,
                                 ssm.emission_cov)
    m0 = m[:, 0].mean(0)
    d0 = m[:, 0] - m0
    cov0 = (P[:, 0] + d0.unsqueeze(-1) * d0.unsqueeze(-2)).mean(0)
    return EMStatistics(transition, n_tr, emission, valid.sum().to(x.dtype), m0, cov0,
                        torch.tensor(float(B), dtype=x.dtype), sm.log_likelihood,
                        sm.filtered, sm)


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
