"""Log-likelihood value from the native C Kalman smoother, gradient by Fisher's identity.

    grad_theta log p(x | theta) = grad_theta E_{p(z | x, theta0)}[log p(x, z | theta)] at theta0

(Fisher 1925; the EM Q-function, Dempster, Laird and Rubin 1977; for LGSSMs Shumway and
Stoffer 1982). The smoother runs once, without autograd, in C; a surrogate whose gradient
is this expectation's, with the smoothed moments held fixed, is then evaluated in torch,
vectorised over T, and ``ll + (q - q.detach())`` has the exact value and the exact first
derivative. For the state, the expected scores are written with the disturbance-smoother
quantities r_t, N_t (Koopman and Shephard 1992), which need no inverse of Q_t: the
discretised Q_t of a smooth kernel is ill-conditioned at short steps and exactly zero for
the (undamped) periodic kernel. Valid for first derivatives only: a double backward
(Hessians, gradient penalties) of the surrogate is NOT the Hessian of log p(x).
"""

from __future__ import annotations

import math
from dataclasses import fields, replace

import torch
from torch import Tensor

from dynvae.errors import ConfigError
from dynvae.ssm.kalman import SmootherResult
from dynvae.ssm.model import LinearGaussianSSM
from dynvae.utils import broadcast_shapes


def detached(model: LinearGaussianSSM) -> LinearGaussianSSM:
    """The same model with every parameter detached from the autograd graph."""
    kw = {f.name: getattr(model, f.name) for f in fields(model) if f.name != "time_varying"}
    return replace(model, **{k: None if v is None else v.detach() for k, v in kw.items()})


def _gauss_expect(cov: Tensor, second: Tensor, n: Tensor | int) -> Tensor:
    """E[log N(e | 0, cov)] given the second moment E[e e^T] = second: (*, K, K) -> (*,).

    -0.5 (n log 2 pi + log det cov + tr(cov^{-1} second)), by a Cholesky solve."""
    L = torch.linalg.cholesky(cov)
    logdet = 2.0 * torch.log(torch.diagonal(L, dim1=-2, dim2=-1)).sum(-1)
    W = torch.linalg.solve_triangular(L, second, upper=False)             # L^{-1} E
    W = torch.linalg.solve_triangular(L, W.transpose(-1, -2), upper=False)  # L^{-1} E L^{-T}
    trace = torch.diagonal(W, dim1=-2, dim2=-1).sum(-1)
    return -0.5 * (n * math.log(2 * math.pi) + logdet + trace)


def _scores(m: Tensor, Pp: Tensor, ms: Tensor, Ps: Tensor) -> tuple[Tensor, Tensor]:
    """r = Pp^{-1}(ms - m) and N = Pp^{-1}(Pp - Ps)Pp^{-1}: d log p(x) / d(predicted mean)
    and, through G = (r r^T - N) / 2, d log p(x) / d(predicted cov) (Koopman and Shephard
    1992, disturbance smoother). (*, S), (*, S, S) each."""
    L = torch.linalg.cholesky(Pp)
    r = torch.cholesky_solve((ms - m)[..., None], L)[..., 0]
    X = torch.cholesky_solve(Pp - Ps, L)
    N = torch.cholesky_solve(X.transpose(-1, -2).contiguous(), L)
    return r, 0.5 * (N + N.transpose(-1, -2))


def fisher_surrogate(model: LinearGaussianSSM, x: Tensor, mask: Tensor,
                     sm: SmootherResult, u: Tensor | None = None) -> Tensor:
    """A scalar-per-sequence function whose gradient is that of log p(x_observed) at the
    current parameters (its value is meaningless): Fisher's identity, grad E[log p(x, z)].

    The state part uses the closed forms of the expected complete-data scores, which need
    no inverse of the (possibly singular or ill-conditioned) transition noise Q_t: with
    r_t, N_t from the predicted and smoothed moments (:func:`_scores`),
        d/dQ_t = (r_t r_t^T - N_t) / 2,   d/dc_t = r_t,
        d/dA_t = r_t ms_{t-1}^T - N_t A_t Pf_{t-1},
    and likewise d/dm0 = r_0, d/dP0 = (r_0 r_0^T - N_0) / 2. The emission part is the EM
    Q-function over observed entries (masked entries drop out exactly).

    Args: model (parameters may carry autograd), x (*batch, T, D), mask like x (bool),
    sm: native smoother output on the same data (constants), u optional (*batch, T, U)
    inputs. Returns: (*batch,).
    """
    T = x.shape[-2]
    f = sm.filtered
    ms, Ps = sm.smoothed_mean.detach(), sm.smoothed_cov.detach()
    r, N = _scores(f.predicted_mean, f.predicted_cov, ms, Ps)              # (*, T, S), (*, T, S, S)
    G = 0.5 * (r[..., :, None] * r[..., None, :]) - 0.5 * N                 # d/d(predicted cov)
    q = (r[..., 0, :] * model.initial_mean).sum(-1) + (G[..., 0, :, :] * model.initial_cov
                                                       ).sum((-1, -2))
    tr_off, em_off = model.offsets(T, u)
    if T > 1:
        A = model.with_time_axis("transition_matrix", T)[..., 1:, :, :]     # (*, T-1, S, S)
        Qt = model.with_time_axis("transition_cov", T)[..., 1:, :, :]
        GA = (r[..., 1:, :, None] * ms[..., :-1, None, :]
              - N[..., 1:, :, :] @ A.detach() @ f.filtered_cov[..., :-1, :, :])
        q = q + ((GA * A).sum((-1, -2)) + (G[..., 1:, :, :] * Qt).sum((-1, -2))).sum(-1)
        if tr_off is not None:
            q = q + (r[..., 1:, :] * tr_off[..., 1:, :]).sum((-1, -2))
    return q + _expected_emission(model, x, mask, ms, Ps, em_off)


def _expected_emission(model: LinearGaussianSSM, x: Tensor, mask: Tensor, m: Tensor,
                       P: Tensor, em_off: Tensor | None) -> Tensor:
    """sum_t E[log N(x_t | H z_t + d_t, R)] over observed entries: masked rows of H and of
    the residual are zeroed and R is the identity there, so they add nothing. (*,)"""
    T = x.shape[-2]
    mf = mask.to(x.dtype)                                                  # (*, T, D)
    H = model.with_time_axis("emission_matrix", T) * mf[..., :, None]       # (*, T, D, S)
    y = x if em_off is None else x - em_off
    r = (y - (H @ m[..., None])[..., 0]) * mf                               # (*, T, D)
    R = model.with_time_axis("emission_cov", T)
    Rm = R * (mf[..., :, None] * mf[..., None, :]) + torch.diag_embed(1.0 - mf)
    E = H @ P @ H.transpose(-1, -2) + r[..., :, None] * r[..., None, :]
    return _gauss_expect(Rm, E, mf.sum(-1)).sum(-1)


def _model_tensors(model: LinearGaussianSSM) -> tuple[list[str], list[Tensor]]:
    names = [f.name for f in fields(model) if f.name != "time_varying"
             and getattr(model, f.name) is not None]
    return names, [getattr(model, n) for n in names]


class _FisherLogLikelihood(torch.autograd.Function):
    """log p(x) with the value given and the gradient from :func:`fisher_surrogate`, built
    in the backward pass. A backward with ``create_graph=True`` (a step towards second
    derivatives) raises: the surrogate's second derivative is not that of log p(x), and
    a gradient without a graph would silently drop terms of the Hessian."""

    @staticmethod
    def forward(ctx, value, context, x, u, *tensors):
        ctx.context = context
        ctx.save_for_backward(x, u if u is not None else torch.empty(0), *tensors)
        ctx.has_u = u is not None
        return value.clone()

    @staticmethod
    def backward(ctx, grad):
        if torch.is_grad_enabled():                      # create_graph=True
            raise ConfigError(
                "the Fisher-identity gradient of the Kalman log-likelihood gives first "
                "derivatives only, and a backward with create_graph=True asks for more; use "
                "AutoKalman(higher_order=True) or ParallelKalman() for second derivatives")
        names, mask, sm, model = ctx.context
        x, u, *tensors = ctx.saved_tensors
        u = u if ctx.has_u else None
        with torch.enable_grad():
            leaves = [v.detach().requires_grad_() for v in (x, *tensors)]
            u_leaf = None if u is None else u.detach().requires_grad_()
            local = replace(model, **dict(zip(names, leaves[1:], strict=True)))
            q = fisher_surrogate(local, leaves[0], mask, sm, u_leaf)
            wanted = leaves + ([u_leaf] if u_leaf is not None else [])
            grads = torch.autograd.grad((q * grad).sum(), wanted, allow_unused=True)
        gx, *g_rest = grads
        gu = g_rest[len(tensors)] if u_leaf is not None else None
        return (None, None, gx, gu, *g_rest[:len(tensors)])


def fisher_log_likelihood(model: LinearGaussianSSM, x: Tensor, mask: Tensor,
                          sm: SmootherResult, u: Tensor | None = None) -> Tensor:
    """The smoother's log-likelihood (*batch,) with exact first derivatives with respect to
    the model's tensors, x and u by Fisher's identity; no second derivatives."""
    names, tensors = _model_tensors(model)
    value = sm.log_likelihood.detach()
    shape = broadcast_shapes(value.shape, x.shape[:-2])
    return _FisherLogLikelihood.apply(value.expand(shape).contiguous(),
                                      (names, mask, sm, model), x, u, *tensors)
