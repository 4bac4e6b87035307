"""Numerical guard shared by every Kalman engine: non-finite or exploding moments raise
:class:`~dynvae.errors.NumericalError` naming the engine, the sequence and the step.

Exact Kalman moments obey two bounds that need nothing but the outputs, so a violation
beyond round-off means the arithmetic broke down (not that the data are unusual):

* conditioning never adds variance: diag P_{t|t} <= diag P_{t|t-1} and
  diag P_{t|T} <= diag P_{t|t-1};
* a posterior mean moves away from the predicted one by at most
  |m_{t|.} - m_{t|t-1}|_i <= sqrt(P_{t|t-1, ii}) sqrt(M) (Cauchy-Schwarz on the
  innovation representation m_{t|T} - m_{t|t-1} = sum_s Cov(z_t, e_s) e_s of the
  normalised innovations e_s), where M = sum_s |e_s|^2 is bounded through the
  log-likelihood: log det S_s >= log det R_s gives
  M <= -2 log p(x) - n log(2 pi) - sum_s log det R_s(observed entries).

A step's predicted covariance is the previous step's filtered one pushed through the
model, so the first step where an engine's recursion blows up violates the first bound.
Variances are compared in the balanced basis of :func:`balancing_scales`, with a slack
for round-off (see :func:`_step_violations`). The check runs once per call over whole
tensors (one host synchronisation), never per step inside a loop.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from dynvae.errors import NumericalError
from dynvae.ssm.model import LinearGaussianSSM
from dynvae.utils import broadcast_shapes

LOG_2PI = math.log(2 * math.pi)


def balancing_scales(initial_cov: Tensor) -> Tensor:
    """Powers of two d_i ~ sqrt(P0_ii), (*B, S): the state z / d has prior variances near 1.

    State-space GPs mix states of wildly different scales (a Matérn-5/2 with a short
    length-scale has derivative variances ~1e8, a periodic kernel with a long length-scale
    harmonics ~1e-30). Scans then lose the small states to round-off, while every engine
    in the balanced basis agrees with the dense GP. Powers of two make the change of basis
    exact in floating point (as LAPACK's xGEBAL balancing does); states with a zero or
    negative prior variance keep d = 1.
    """
    v = torch.diagonal(initial_cov, dim1=-2, dim2=-1).detach()
    ok = (v > 0) & torch.isfinite(v)
    exponent = torch.round(0.5 * torch.log2(torch.where(ok, v, torch.ones_like(v))))
    return torch.exp2(exponent).to(initial_cov.dtype)


def tolerance(dtype: torch.dtype) -> float:
    """Relative slack for round-off: 1e-6 in float64, ~1e-3 in float32."""
    return max(1e-6, 1e4 * torch.finfo(dtype).eps)


def mahalanobis_bound(model: LinearGaussianSSM, mask: Tensor, log_lik: Tensor) -> Tensor:
    """Upper bound on the summed squared normalised innovations M of each sequence, (*batch,).

    Infinite where an observed block of R is singular (then no mean bound applies).
    Args: mask (*batch, T, D) bool; log_lik (*batch,).
    """
    T, D = mask.shape[-2], mask.shape[-1]
    R = model.with_time_axis("emission_cov", T)                          # (*b, T, D, D)
    m = mask.to(R.dtype)
    if D == 1:
        logdet = torch.where(mask[..., 0], R[..., 0, 0].log(), torch.zeros_like(m[..., 0]))
    else:
        Rm = R * (m[..., :, None] * m[..., None, :]) + torch.diag_embed(1.0 - m)
        L, info = torch.linalg.cholesky_ex(Rm)
        logdet = 2 * torch.log(torch.diagonal(L, dim1=-2, dim2=-1)).sum(-1)
        logdet = torch.where(info == 0, logdet, torch.full_like(logdet, -math.inf))
    logdet = torch.nan_to_num(logdet, nan=-math.inf)
    bound = -2 * log_lik - m.sum((-1, -2)) * LOG_2PI - logdet.sum(-1)
    return bound.clamp_min(0.0)


def _step_violations(pred_mean: Tensor, pred_cov: Tensor, post_mean: Tensor, post_cov: Tensor,
                     bound: Tensor, scale: Tensor, tol: float) -> tuple[Tensor, Tensor]:
    """Per (sequence, step): variance and mean bound violations, each (*batch, T) bool.

    In the balanced basis z / d (d: ``scale`` (*batch, S), see balancing_scales), with
    slack sqrt(tol) times the largest predicted variance after step 0 (the size of what
    the recursions add and subtract), plus tol relative: round-off grows like
    eps * cond(K + noise I), measured up to 1e-4 of that size on a sweep of GPs with
    cond ~3e10, and a blow-up exceeds it by orders of magnitude.
    """
    d2 = (scale * scale)[..., None, :]                                   # (*, 1, S)
    dp = torch.diagonal(pred_cov, dim1=-2, dim2=-1) / d2                 # (*, T, S)
    dq = torch.diagonal(post_cov, dim1=-2, dim2=-1) / d2
    later = dp[..., 1:, :] if dp.shape[-2] > 1 else dp
    size = torch.where(torch.isfinite(later), later.abs(), torch.zeros_like(later)
                       ).amax((-1, -2), keepdim=True)                    # (*, 1, 1)
    atol = tol ** 0.5 * size + tol * dp.abs() + torch.finfo(dp.dtype).tiny
    # written so that NaN and inf fail every comparison
    bad_var = ~((dq <= dp + atol) & (dq >= -atol) & (dp >= -atol) & torch.isfinite(dp))
    room = 4 * (dp.clamp_min(0) + atol) * (1 + bound[..., None, None])  # (*, T, S)
    shift = (post_mean - pred_mean).pow(2) / d2
    bad_mean = ~(shift <= room) & ~torch.isinf(room)
    bad_mean |= ~torch.isfinite(post_mean)
    return bad_var.any(-1), bad_mean.any(-1)


def _first(bad: Tensor) -> tuple[str, int]:
    """(batch index, step) of the earliest violation in the first sequence that has one."""
    index = bad.nonzero()[0].tolist()
    return ",".join(map(str, index[:-1])) or "0", index[-1]


def check_moments(engine: str, model: LinearGaussianSSM, mask: Tensor, log_lik: Tensor,
                  pred_mean: Tensor, pred_cov: Tensor,
                  posteriors: list[tuple[str, Tensor, Tensor]]) -> None:
    """Raise :class:`NumericalError` if the moments are non-finite or break the bounds above.

    Args: engine: name used in the message (e.g. "parallel Kalman smoother").  mask
    (*batch, T, D) bool, True where observed.  log_lik (*batch,).  pred_mean (*batch, T, S),
    pred_cov (*batch, T, S, S): predicted moments.  posteriors: (name, mean, cov) of the
    filtered and/or smoothed moments, shaped like the predicted ones.
    """
    with torch.no_grad():
        ll = log_lik.detach()
        tol = tolerance(pred_cov.dtype)
        batch = broadcast_shapes(ll.shape, pred_mean.shape[:-2])
        bound = mahalanobis_bound(model, mask, ll).expand(batch)
        scale = balancing_scales(model.initial_cov.detach()).to(pred_cov.device)
        flags = [~torch.isfinite(ll).expand(batch)]
        for _, mean, cov in posteriors:
            flags.extend(_step_violations(pred_mean.detach(), pred_cov.detach(), mean.detach(),
                                          cov.detach(), bound, scale, tol))
        any_bad = torch.stack([f.flatten().any() for f in flags])
        if not bool(any_bad.any()):                                       # the one sync
            return
    for k, (name, _, _) in enumerate(posteriors):
        for kind, bad in (("covariance", flags[1 + 2 * k]), ("mean", flags[2 + 2 * k])):
            if bool(bad.any()):
                seq, step = _first(bad)
                raise NumericalError(
                    f"{engine}: {name} {kind} exploded or became non-finite at step {step} "
                    f"(sequence {seq}): it leaves the bound that exact conditioning obeys, "
                    "so the result would be wrong; the model is too ill-conditioned for "
                    "this engine (try another engine, or float64)")
    seq = ",".join(map(str, flags[0].nonzero()[0].tolist())) or "0"
    raise NumericalError(f"{engine}: the log-likelihood is not finite (sequence {seq}): a "
                         "covariance is degenerate or the arithmetic overflowed")


def check_filter(engine: str, model: LinearGaussianSSM, mask: Tensor, f) -> None:
    """:func:`check_moments` on a FilterResult ``f``."""
    check_moments(engine, model, mask, f.log_likelihood, f.predicted_mean, f.predicted_cov,
                  [("filtered", f.filtered_mean, f.filtered_cov)])


def check_smoother(engine: str, model: LinearGaussianSSM, mask: Tensor, s) -> None:
    """:func:`check_moments` on the smoothed part of a SmootherResult ``s``."""
    f = s.filtered
    check_moments(engine, model, mask, s.log_likelihood, f.predicted_mean, f.predicted_cov,
                  [("smoothed", s.smoothed_mean, s.smoothed_cov)])
