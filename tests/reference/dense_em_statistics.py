"""Oracle for dynvae.models.lgssm_em.e_step: the expected sufficient statistics built
step by step as (B, T, n, n) tensors of E[xi xi^T] = Cov + mean mean^T, with the
conditional moments of missing entries computed per step (no grouping of patterns,
no matrix-product shortcuts)."""

from __future__ import annotations

import torch


def step_conditional(x, mask, offset, H, R):
    """Per step: x_t = L z_t + l + e with the conditional Gaussian of the missing entries
    given the observed ones (Shumway & Stoffer 1982), by explicit index selection."""
    B, T, D = x.shape
    S = H.shape[1]
    L = torch.zeros(B, T, D, S, dtype=x.dtype)
    ell = torch.zeros(B, T, D, dtype=x.dtype)
    E = torch.zeros(B, T, D, D, dtype=x.dtype)
    for b in range(B):
        for t in range(T):
            o = mask[b, t].nonzero().flatten()
            mi = (~mask[b, t]).nonzero().flatten()
            ell[b, t, o] = x[b, t, o]
            if len(mi) == 0:
                continue
            if len(o) == 0:
                G = torch.zeros(len(mi), 0, dtype=x.dtype)
            else:
                G = R[mi][:, o] @ torch.linalg.pinv(R[o][:, o])
            L[b, t, mi] = H[mi] - G @ H[o]
            ell[b, t, mi] = offset[b, t, mi] + G @ (x[b, t, o] - offset[b, t, o])
            E[b, t, mi.unsqueeze(-1), mi] = R[mi][:, mi] - G @ R[o][:, mi]
    return L, ell, E


def dense_statistics(sm, x, mask, lengths, u, H, R, offset, groups=None, n_groups=1):
    """(transition (K, n, n), counts (K,), emission (n_e, n_e)) from smoother moments."""
    m, P, C = sm.smoothed_mean, sm.smoothed_cov, sm.smoothed_cross_cov
    B, T, S = m.shape
    D = x.shape[-1]
    ones = torch.ones(B, T, 1, dtype=x.dtype)
    u_aug = ones if u is None else torch.cat([u, ones], -1)
    n_aug = u_aug.shape[-1]
    n = 2 * S + n_aug
    trans = torch.zeros(n_groups, n, n, dtype=x.dtype)
    counts = torch.zeros(n_groups, dtype=x.dtype)
    L, ell, E = step_conditional(x, mask, offset, H, R)
    n_e = D + S + n_aug
    emis = torch.zeros(n_e, n_e, dtype=x.dtype)
    for b in range(B):
        for t in range(int(lengths[b])):
            mx = L[b, t] @ m[b, t] + ell[b, t]
            mean = torch.cat([mx, m[b, t], u_aug[b, t]])
            cov = torch.zeros(n_e, n_e, dtype=x.dtype)
            cov[:D, :D] = L[b, t] @ P[b, t] @ L[b, t].T + E[b, t]
            cov[:D, D:D + S] = L[b, t] @ P[b, t]
            cov[D:D + S, :D] = (L[b, t] @ P[b, t]).T
            cov[D:D + S, D:D + S] = P[b, t]
            emis += cov + torch.outer(mean, mean)
            if t == 0:
                continue
            k = 0 if groups is None else int(groups[b, t])
            mean = torch.cat([m[b, t], m[b, t - 1], u_aug[b, t]])
            cov = torch.zeros(n, n, dtype=x.dtype)
            cov[:S, :S] = P[b, t]
            cov[S:2 * S, S:2 * S] = P[b, t - 1]
            cov[:S, S:2 * S] = C[b, t]
            cov[S:2 * S, :S] = C[b, t].T
            trans[k] += cov + torch.outer(mean, mean)
            counts[k] += 1
    return trans, counts, emis
