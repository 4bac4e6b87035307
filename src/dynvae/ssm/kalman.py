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
from dynvae.gaussian import batched_mv, condition_on_observation_ex, psd_sqrt, symmetrize
from dynvae.ssm.model import _EVENT_DIMS, LinearGaussianSSM


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
        return torch.ones(x.shape, dtype=torch.bool, device=x.device)
    if mask.shape != x.shape:
        raise DataError(f"mask shape {tuple(mask.shape)} != x shape {tuple(x.shape)}")
    return mask.to(torch.bool)


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
    failed = _FirstFailure(x.device)      # checked once after the loop: no per-step sync
    for t in range(T):
        if t > 0:
            A = model.param_at("transition_matrix", t)
            mean = batched_mv(A, mean)
            if trans_off is not None:
                mean = mean + trans_off[..., t, :]
            cov = symmetrize(A @ cov @ A.transpose(-1, -2) + model.param_at("transition_cov", t))
        pm.append(mean)
        pc.append(cov)
        mean, cov, ll, ok = condition_on_observation_ex(
            mean, cov, y[..., t, :], model.param_at("emission_matrix", t),
            model.param_at("emission_cov", t), mask[..., t, :])
        failed.record(ok, t)
        log_lik = log_lik + ll
        fm.append(mean)
        fc.append(cov)
    failed.raise_if_any("kalman_filter", "the innovation covariance is not positive definite")
    # a parameter with batch dims (e.g. only the transition) can widen the batch mid-way
    batch_shape = torch.broadcast_shapes(x.shape[:-2], log_lik.shape, fm[-1].shape[:-1],
                                         fc[-1].shape[:-2])
    stack = lambda xs, ev: torch.stack(torch.broadcast_tensors(*xs), dim=-1 - ev).expand(
        *batch_shape, T, *xs[0].shape[-ev:])
    return FilterResult(log_lik.expand(batch_shape), stack(pm, 1), stack(pc, 2), stack(fm, 1),
                        stack(fc, 2))


class _FirstFailure:
    """The first step at which a per-step check failed, kept on the device so that a
    loop over steps never waits for the device; one host sync in :meth:`raise_if_any`."""

    def __init__(self, device) -> None:
        self.step = torch.full((), -1, dtype=torch.long, device=device)

    def record(self, ok: Tensor, t: int) -> None:
        bad = ~ok.all()
        self.step = torch.where(bad & (self.step < 0), torch.full_like(self.step, t),
                                self.step)

    def raise_if_any(self, where: str, problem: str) -> None:
        step = int(self.step)
        if step >= 0:
            raise torch.linalg.LinAlgError(f"{where}: {problem} at step {step}")


def smoother_gain(filtered_cov: Tensor, predicted_cov_next: Tensor, A_next: Tensor) -> Tensor:
    """G_t = P_{t|t} A_{t+1}^T P_{t+1|t}^{-1}, (…, S, S); LinAlgError when a P_{t+1|t} is
    singular."""
    G, ok = smoother_gain_ex(filtered_cov, predicted_cov_next, A_next)
    if not bool(ok.all()):
        raise torch.linalg.LinAlgError("smoother_gain: a predicted covariance is singular")
    return G


def smoother_gain_ex(filtered_cov: Tensor, predicted_cov_next: Tensor, A_next: Tensor
                     ) -> tuple[Tensor, Tensor]:
    """:func:`smoother_gain` and ``ok`` (…) bool (False: P_{t+1|t} singular), no sync."""
    G, info = torch.linalg.solve_ex(predicted_cov_next, A_next @ filtered_cov)
    return G.transpose(-1, -2), info == 0


def rts_smoother(model: LinearGaussianSSM, x: Tensor, mask: Tensor | None = None,
                 u: Tensor | None = None, filtered: FilterResult | None = None) -> SmootherResult:
    """Rauch-Tung-Striebel smoother: posterior marginals of z_t given all of x.

    Arguments as :func:`kalman_filter`; pass ``filtered`` to reuse a filter pass.
    """
    f = filtered if filtered is not None else kalman_filter(model, x, mask, u)
    T = f.filtered_mean.shape[-2]
    sm, sc = f.filtered_mean[..., T - 1, :], f.filtered_cov[..., T - 1, :, :]
    means, covs, cross = [sm], [sc], [torch.zeros_like(sc)]
    failed = _FirstFailure(sm.device)
    for t in range(T - 2, -1, -1):
        G, ok = smoother_gain_ex(f.filtered_cov[..., t, :, :], f.predicted_cov[..., t + 1, :, :],
                                 model.param_at("transition_matrix", t + 1))
        failed.record(ok, t)
        cross.append(sc @ G.transpose(-1, -2))                    # Cov(z_{t+1}, z_t | x)
        sm = f.filtered_mean[..., t, :] + batched_mv(G, sm - f.predicted_mean[..., t + 1, :])
        sc = symmetrize(f.filtered_cov[..., t, :, :]
                        + G @ (sc - f.predicted_cov[..., t + 1, :, :]) @ G.transpose(-1, -2))
        means.append(sm)
        covs.append(sc)
    failed.raise_if_any("rts_smoother", "the predicted covariance is singular")
    cross = cross[1:][::-1]                                       # entries t = 1..T-1
    cross = [torch.zeros_like(covs[0])] + cross
    return SmootherResult(f.log_likelihood, torch.stack(means[::-1], -2),
                          torch.stack(covs[::-1], -3), torch.stack(cross, -3), f)


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

    def draw(mean: Tensor, cov: Tensor) -> Tensor:
        eps = torch.randn(shape, dtype=mean.dtype, device=mean.device, generator=generator)
        return mean + batched_mv(psd_sqrt(cov), eps)

    z = draw(f.filtered_mean[..., T - 1, :], f.filtered_cov[..., T - 1, :, :])
    path = [z]
    for t in range(T - 2, -1, -1):
        Pf = f.filtered_cov[..., t, :, :]
        G = smoother_gain(Pf, f.predicted_cov[..., t + 1, :, :],
                           model.param_at("transition_matrix", t + 1))
        mean = f.filtered_mean[..., t, :] + batched_mv(G, z - f.predicted_mean[..., t + 1, :])
        cov = symmetrize(Pf - G @ f.predicted_cov[..., t + 1, :, :] @ G.transpose(-1, -2))
        z = draw(mean, cov)
        path.append(z)
    return torch.stack(path[::-1], dim=-2)
