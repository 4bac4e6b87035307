"""Shared Gaussian algebra used by the Kalman core, the GP code and the models.

Shapes follow the project vocabulary: ``(*batch, S)`` for means and
``(*batch, S, S)`` for covariances. Everything here is a pure function.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

LOG_2PI = math.log(2.0 * math.pi)


def symmetrize(P: Tensor) -> Tensor:
    """(…, S, S) -> 0.5 (P + P^T): removes round-off asymmetry of covariances."""
    return 0.5 * (P + P.transpose(-1, -2))


def batched_mv(M: Tensor, v: Tensor) -> Tensor:
    """(…, m, n) @ (…, n) -> (…, m)."""
    return (M @ v.unsqueeze(-1)).squeeze(-1)


def diag_gaussian_log_prob(x: Tensor, mean: Tensor, var: Tensor, mask: Tensor | None = None
                           ) -> Tensor:
    """Elementwise log N(x | mean, var) (…, D), zero where ``mask`` is False."""
    lp = -0.5 * (LOG_2PI + torch.log(var) + (x - mean).pow(2) / var)
    if mask is not None:
        lp = torch.where(mask, lp, torch.zeros_like(lp))
    return lp


def kl_diag_gaussians(mean_q: Tensor, var_q: Tensor, mean_p: Tensor, var_p: Tensor) -> Tensor:
    """Elementwise KL( N(mean_q, var_q) || N(mean_p, var_p) ) for diagonal Gaussians, (…, Z).

    Closed form: 0.5 [log(var_p/var_q) + (var_q + (mean_q-mean_p)^2)/var_p - 1].
    """
    return 0.5 * (torch.log(var_p) - torch.log(var_q)
                  + (var_q + (mean_q - mean_p).pow(2)) / var_p - 1.0)


def mask_observation(y: Tensor, H: Tensor, R: Tensor, mask: Tensor | None
                     ) -> tuple[Tensor, Tensor, Tensor, Tensor | int]:
    """Masked-entry trick: decouple missing entries of y = H z + v with static shapes.

    Rows of H and entries of y that are missing (``mask`` False) are zeroed and their
    block of R is replaced by the identity, so a missing entry becomes an independent
    standard normal "observation" of 0 that carries no information on z.

    Args: y (…, D), H (…, D, S), R (…, D, D), mask optional (…, D) bool.
    Returns: y (…, D), H (…, D, S), R (…, D, D) and the number of observed entries (…)
        (the int D when ``mask`` is None).
    """
    if mask is None:
        return y, H, R, y.shape[-1]
    m = mask.to(H.dtype)
    H = H * m.unsqueeze(-1)
    R = R * (m.unsqueeze(-1) * m.unsqueeze(-2)) + torch.diag_embed(1.0 - m)
    return y * m, H, R, m.sum(-1)


def kalman_gain(cov: Tensor, H: Tensor, R: Tensor) -> tuple[Tensor, Tensor]:
    """Gain K = P H^T S^{-1} (…, S, D) and Cholesky factor L (…, D, D) of S = H P H^T + R."""
    PHt = cov @ H.transpose(-1, -2)                         # (…, S, D)
    if H.shape[-2] == 1:
        # scalar observations: plain division avoids batched LAPACK calls on (…, 1, 1)
        # matrices, which dominate the cost of long sequences
        # (a non-positive S gives a NaN factor, which the callers' moment checks report:
        # no host synchronisation here, as this runs once per step of a loop)
        S = H @ PHt + R                                     # (…, 1, 1)
        return PHt / S, S.sqrt()
    L, info = torch.linalg.cholesky_ex(symmetrize(H @ PHt + R))
    L = torch.where((info == 0)[..., None, None], L, torch.full_like(L, math.nan))
    K = torch.cholesky_solve(PHt.transpose(-1, -2), L).transpose(-1, -2)
    return K, L


def joseph_cov(cov: Tensor, K: Tensor, H: Tensor, R: Tensor) -> Tensor:
    """Joseph form (I - K H) P (I - K H)^T + K R K^T: symmetric PSD for any gain K."""
    I_KH = torch.eye(cov.shape[-1], dtype=cov.dtype, device=cov.device) - K @ H
    return symmetrize(I_KH @ cov @ I_KH.transpose(-1, -2) + K @ R @ K.transpose(-1, -2))


def innovation_log_lik(L: Tensor, resid: Tensor, n_obs: Tensor | int) -> Tensor:
    """log N(resid | 0, L L^T) (…) counting only ``n_obs`` entries.

    Entries decoupled by :func:`mask_observation` have resid 0 and unit variance, so each
    contributes exactly -0.5 log(2 pi), which counting only observed entries removes.
    """
    if L.shape[-1] == 1:
        z = resid / L.squeeze(-1)
    else:
        z = torch.linalg.solve_triangular(L, resid.unsqueeze(-1), upper=False).squeeze(-1)
    half_logdet = torch.log(torch.diagonal(L, dim1=-2, dim2=-1)).sum(-1)
    return -0.5 * z.pow(2).sum(-1) - half_logdet - 0.5 * n_obs * LOG_2PI


def condition_on_observation(
    mean: Tensor, cov: Tensor, y: Tensor, H: Tensor, R: Tensor, mask: Tensor | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """Condition N(mean, cov) on y = H z + v, v ~ N(0, R), using only observed entries.

    Missing entries (``mask`` False) are removed exactly, with static shapes, by
    :func:`mask_observation`; their constant log N(0 | 0, 1) is then taken out of the
    log-likelihood.

    Args:
        mean: (…, S) prior mean.  cov: (…, S, S) prior covariance.
        y: (…, D) observation residual target (bias already subtracted).
        H: (…, D, S) emission matrix.  R: (…, D, D) observation noise covariance.
        mask: optional (…, D) bool, True where observed.

    Returns:
        posterior mean (…, S), posterior covariance (…, S, S) in Joseph form,
        log-likelihood of the observed entries (…).
    """
    y, H, R, n_obs = mask_observation(y, H, R, mask)
    resid = y - batched_mv(H, mean)
    K, L = kalman_gain(cov, H, R)
    new_mean = mean + batched_mv(K, resid)
    return new_mean, joseph_cov(cov, K, H, R), innovation_log_lik(L, resid, n_obs)


def psd_sqrt(P: Tensor, max_jitter: float = 1e-4) -> Tensor:
    """Lower-triangular L with L L^T = P for symmetric PSD (…, S, S) matrices.

    The Cholesky factor of every positive definite P. A singular P (a noise-free state
    component, a periodic kernel's transition noise, a deterministic backward
    conditional in FFBS) gets the Cholesky factor of P + j d I instead, d its mean
    diagonal and j growing from 10 machine epsilons by factors of 10 up to
    ``max_jitter``; the other matrices of the batch are left exact. Differentiable.
    Raises LinAlgError when even the largest jitter fails (P is not PSD).
    """
    P = symmetrize(P)
    L, info = torch.linalg.cholesky_ex(P)
    failed = info > 0                                                      # (…)
    if not bool(failed.any()):
        return L
    scale = torch.diagonal(P, dim1=-2, dim2=-1).abs().mean(-1).clamp_min(
        torch.finfo(P.dtype).tiny)                                         # (…)
    eye = torch.eye(P.shape[-1], dtype=P.dtype, device=P.device)
    jitter = 10 * torch.finfo(P.dtype).eps
    while jitter <= max_jitter:
        add = torch.where(failed, jitter * scale, torch.zeros_like(scale))
        L, info = torch.linalg.cholesky_ex(P + add[..., None, None] * eye)
        if not bool((info > 0).any()):
            return L
        jitter *= 10
    raise torch.linalg.LinAlgError(
        f"a covariance is not positive semi-definite: its Cholesky factorisation fails even "
        f"with {max_jitter:g} x its mean diagonal added")



def sampling_factor(P: Tensor) -> Tensor:
    """A factor L with L L^T = P+, for drawing from N(m, P) where P (…, S, S) is a
    covariance that float rounding may have left slightly indefinite (e.g. a float32
    smoothed covariance): the Cholesky factor of every positive definite P, and for the
    others V diag(sqrt(max(lambda, 0))) from their eigendecomposition, the square root of
    the nearest PSD matrix in Frobenius norm. Non-finite P raises LinAlgError."""
    if not bool(torch.isfinite(P).all()):
        raise torch.linalg.LinAlgError("a covariance to draw from holds NaN or inf")
    P = symmetrize(P)
    L, info = torch.linalg.cholesky_ex(P)
    failed = info > 0                                                      # (…)
    if not bool(failed.any()):
        return L
    lam, V = torch.linalg.eigh(P)
    projected = V * lam.clamp_min(0).sqrt().unsqueeze(-2)
    return torch.where(failed[..., None, None], projected, L)
