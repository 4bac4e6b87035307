"""Sequential Kalman filter, RTS smoother and forward-filter backward-sample.

Pure functions over tensors with any leading batch dims, differentiable by
autograd, float32 or float64. ``x`` is (*batch, T, D); ``mask`` (*batch, T, D)
is True where observed (a partly observed vector uses its observed entries; a
fully masked step is a pure prediction, which is how padding is handled).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from dynvae.errors import DataError
from dynvae.gaussian import (
    batched_mv,
    condition_on_observation,
    psd_sqrt,
    sampling_factor,
    symmetrize,
)
from dynvae.ssm.guard import check_filter, check_smoother
from dynvae.ssm.model import _EVENT_DIMS, LinearGaussianSSM
from dynvae.utils import broadcast_shapes


class FilterResult(NamedTuple):
    """Outputs of the Kalman filter.

    log_likelihood: (*batch,) log p(x_{observed}) of each sequence.
    predicted_mean: (*batch, T, S) E[z_t | x_{<t}].   predicted_cov: (*batch, T, S, S).
    filtered_mean: (*batch, T, S) E[z_t | x_{<=t}].   filtered_cov: (*batch, T, S, S).
    """

    log_likelihood: Tensor
    predicted_mean: Tensor
    predicted_cov: Tensor
    filtered_mean: Tensor
    filtered_cov: Tensor


class SmootherResult(NamedTuple):
    """Outputs of the RTS smoother.

    smoothed_mean: (*batch, T, S) E[z_t | x_{1:T}].   smoothed_cov: (*batch, T, S, S).
    smoothed_cross_cov: (*batch, T, S, S), entry t = Cov(z_t, z_{t-1} | x_{1:T}); entry 0 is 0.
    filtered: the :class:`FilterResult` it was computed from.
    """

    log_likelihood: Tensor
    smoothed_mean: Tensor
    smoothed_cov: Tensor
    smoothed_cross_cov: Tensor
    filtered: FilterResult


def check_inputs(model: LinearGaussianSSM, x: Tensor, mask: Tensor | None,
                 u: Tensor | None) -> Tensor:
    """Validate shapes; return the mask as a bool tensor (all True when None)."""
    if x.ndim < 2:
        raise DataError(f"x must have shape (*batch, T, D), got {tuple(x.shape)}")
    if x.shape[-1] != model.obs_dim:
        raise DataError(f"x has {x.shape[-1]} channels, the model emits {model.obs_dim}")
    T = x.shape[-2]
    for name in model.time_varying:
        v = getattr(model, name)
        if v.shape[v.ndim - _EVENT_DIMS[name] - 1] != T:
            raise DataError(f"time-varying {name} has {v.shape[v.ndim - _EVENT_DIMS[name] - 1]} "
                            f"steps, x has T={T}")
    if u is not None and u.shape[-2] != T:
        raise DataError(f"u has {u.shape[-2]} steps, x has T={T}")
    if mask is None:
        mask = torch.ones(x.shape, dtype=torch.bool, device=x.device)
    elif mask.shape != x.shape:
        raise DataError(f"mask shape {tuple(mask.shape)} != x shape {tuple(x.shape)}")
    mask = mask.to(torch.bool)
    bad = mask & ~torch.isfinite(x.detach())
    if bad.any():                      # a NaN or inf the mask calls observed
        where = tuple(int(i) for i in bad.nonzero()[0])
        raise DataError(f"x has a non-finite value {float(x.detach()[where])} at index "
                        f"{where} where the mask says observed: mark missing entries "
                        "False in the mask (their values are then ignored)")
    return mask


def kalman_filter(model: LinearGaussianSSM, x: Tensor, mask: Tensor | None = None,
                  u: Tensor | None = None) -> FilterResult:
    """Kalman filter with Joseph-form updates.

    Args:
        model: the SSM parameters.
        x: (*batch, T, D) observations (values at masked entries are ignored).
        mask: optional (*batch, T, D) bool, True where observed.
        u: optional (*batch, T, U) control inputs.
    """
    mask = check_inputs(model, x, mask, u)
    T = x.shape[-2]
    trans_off, emis_off = model.offsets(T, u)
    y = x if emis_off is None else x - emis_off
    y = torch.where(mask, y, torch.zeros_like(y))
    mean, cov = model.initial_mean, model.initial_cov
    log_lik = torch.zeros((), dtype=x.dtype, device=x.device)
    pm, pc, fm, fc = [], [], [], []
    for t in range(T):
        if t > 0:
            A = model.param_at("transition_matrix", t)
            mean = batched_mv(A, mean)
            if trans_off is not None:
                mean = mean + trans_off[..., t, :]
            cov = symmetrize(A @ cov @ A.transpose(-1, -2) + model.param_at("transition_cov", t))
        pm.append(mean)
        pc.append(cov)
        mean, cov, ll = condition_on_observation(
            mean, cov, y[..., t, :], model.param_at("emission_matrix", t),
            model.param_at("emission_cov", t), mask[..., t, :])
        log_lik = log_lik + ll
        fm.append(mean)
        fc.append(cov)
    # a parameter with batch dims (e.g. only the transition) can widen the batch mid-way
    batch_shape = broadcast_shapes(x.shape[:-2], log_lik.shape, fm[-1].shape[:-1],
                                   fc[-1].shape[:-2])
    stack = lambda xs, ev: torch.stack(torch.broadcast_tensors(*xs), dim=-1 - ev).expand(
        *batch_shape, T, *xs[0].shape[-ev:])
    out = FilterResult(log_lik.expand(batch_shape), stack(pm, 1), stack(pc, 2), stack(fm, 1),
                       stack(fc, 2))
    check_filter("sequential Kalman filter", model, mask, out)
    return out


def smoother_gain(filtered_cov: Tensor, predicted_cov_next: Tensor, A_next: Tensor) -> Tensor:
    """RTS gain G_t = P_{t|t} A_{t+1}^T P_{t+1|t}^{-1}, (…, S, S), without an explicit inverse.

    P_{t+1|t} spans many orders of magnitude for state-space GPs (derivative states of a
    short Matérn next to near-zero high harmonics of a periodic kernel), so it is first
    equilibrated, C = D^{-1} P D^{-1} with D = sqrt(diag P), and solved by Cholesky; where C
    is numerically singular (a noise-free direction) the pseudo-inverse is used, which is
    the limit of the gain as that direction's variance goes to zero. Vectorised over all
    leading dims: pass every step at once (one host synchronisation per call).
    """
    return stable_solve(predicted_cov_next, A_next @ filtered_cov).transpose(-1, -2)


def stable_solve(P: Tensor, rhs: Tensor) -> Tensor:
    """P^+ rhs for symmetric PSD P (…, S, S) and rhs (…, S, K): equilibrated Cholesky
    solve, pseudo-inverse where P is numerically singular (see :func:`smoother_gain`)."""
    d = torch.diagonal(P, dim1=-2, dim2=-1)
    d = torch.where(d > 0, d, torch.ones_like(d)).sqrt()                 # (…, S)
    C = symmetrize(P / (d[..., :, None] * d[..., None, :]))
    b = rhs / d[..., :, None]
    L, info = torch.linalg.cholesky_ex(C)
    singular = info != 0
    X = torch.cholesky_solve(b, torch.where(singular[..., None, None],
                                            torch.eye(C.shape[-1], dtype=C.dtype,
                                                      device=C.device), L))
    if bool(singular.any()):                                             # one sync per call
        X = torch.where(singular[..., None, None],
                        torch.linalg.pinv(C, hermitian=True) @ b, X)
    return X / d[..., :, None]


def rts_smoother(model: LinearGaussianSSM, x: Tensor, mask: Tensor | None = None,
                 u: Tensor | None = None, filtered: FilterResult | None = None) -> SmootherResult:
    """Rauch-Tung-Striebel smoother: posterior marginals of z_t given all of x.

    Arguments as :func:`kalman_filter`; pass ``filtered`` to reuse a filter pass.
    """
    mask = check_inputs(model, x, mask, u)
    f = filtered if filtered is not None else kalman_filter(model, x, mask, u)
    T = f.filtered_mean.shape[-2]
    A = model.with_time_axis("transition_matrix", T)
    gains = smoother_gain(f.filtered_cov[..., :-1, :, :], f.predicted_cov[..., 1:, :, :],
                          A[..., 1:, :, :])                              # (…, T-1, S, S)
    sm, sc = f.filtered_mean[..., T - 1, :], f.filtered_cov[..., T - 1, :, :]
    means, covs, cross = [sm], [sc], [torch.zeros_like(sc)]
    for t in range(T - 2, -1, -1):
        G = gains[..., t, :, :]
        cross.append(sc @ G.transpose(-1, -2))                    # Cov(z_{t+1}, z_t | x)
        sm = f.filtered_mean[..., t, :] + batched_mv(G, sm - f.predicted_mean[..., t + 1, :])
        sc = symmetrize(f.filtered_cov[..., t, :, :]
                        + G @ (sc - f.predicted_cov[..., t + 1, :, :]) @ G.transpose(-1, -2))
        means.append(sm)
        covs.append(sc)
    cross = cross[1:][::-1]                                       # entries t = 1..T-1
    cross = [torch.zeros_like(covs[0])] + cross
    out = SmootherResult(f.log_likelihood, torch.stack(means[::-1], -2),
                         torch.stack(covs[::-1], -3), torch.stack(cross, -3), f)
    check_smoother("sequential RTS smoother", model, mask, out)
    return out


def ffbs_sample(model: LinearGaussianSSM, x: Tensor, mask: Tensor | None = None,
                u: Tensor | None = None, n_samples: int = 1,
                generator: torch.Generator | None = None,
                filtered: FilterResult | None = None) -> Tensor:
    """Forward-filter backward-sample: exact draws from p(z_{0:T-1} | x).

    Returns: (n_samples, *batch, T, S) posterior state paths.
    """
    f = filtered if filtered is not None else kalman_filter(model, x, mask, u)
    T = f.filtered_mean.shape[-2]
    S = f.filtered_mean.shape[-1]
    shape = (n_samples, *f.filtered_mean.shape[:-2], S)

    def draw(mean: Tensor, chol: Tensor) -> Tensor:
        eps = torch.randn(shape, dtype=mean.dtype, device=mean.device, generator=generator)
        return mean + batched_mv(chol, eps)

    A = model.with_time_axis("transition_matrix", T)
    Pf, Pp = f.filtered_cov, f.predicted_cov
    gains = smoother_gain(Pf[..., :-1, :, :], Pp[..., 1:, :, :], A[..., 1:, :, :])  # (…, T-1, S, S)
    # Cov(z_t | z_{t+1}, x_{<=t}) does not depend on the draws: factor every step at once
    cond = symmetrize(Pf[..., :-1, :, :] - gains @ Pp[..., 1:, :, :] @ gains.transpose(-1, -2))
    covs = torch.cat((cond, Pf[..., -1:, :, :]), -3)              # (…, T, S, S)
    try:
        chols = psd_sqrt(covs)
    except torch.linalg.LinAlgError:
        # A deterministic component (a periodic kernel's noise-free oscillator, a
        # length-scale fitted to ~infinity) leaves conditionals singular to within
        # rounding, which even jitter cannot factor: draw from the nearest PSD matrix.
        chols = sampling_factor(covs)
    z = draw(f.filtered_mean[..., T - 1, :], chols[..., T - 1, :, :])
    path = [z]
    for t in range(T - 2, -1, -1):
        mean = f.filtered_mean[..., t, :] + batched_mv(gains[..., t, :, :],
                                                       z - f.predicted_mean[..., t + 1, :])
        z = draw(mean, chols[..., t, :, :])
        path.append(z)
    return torch.stack(path[::-1], dim=-2)
