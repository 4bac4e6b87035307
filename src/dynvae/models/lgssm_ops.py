"""Helpers of the LGSSM model: predictive moments, forecasting, sampling, M-step."""

from __future__ import annotations

import torch
from torch import Tensor

from dynvae.errors import DataError
from dynvae.gaussian import batched_mv, psd_sqrt, symmetrize
from dynvae.models.base import Prediction
from dynvae.models.lgssm_em import EMStatistics, missing_entry_moments, regression_m_step
from dynvae.ssm import LinearGaussianSSM


def emit(model: LinearGaussianSSM, mean: Tensor, cov: Tensor, u: Tensor | None,
         t: Tensor) -> Prediction:
    """Observation moments from state moments: mean (B, T, S), cov (B, T, S, S) ->
    Prediction with mean H m + c and std sqrt(diag(H P H^T + R)), each (B, T, D)."""
    H, R = model.emission_matrix, model.emission_cov
    _, emis_off = model.offsets(mean.shape[-2], u)
    x_mean = batched_mv(H, mean)                                        # (B, T, D)
    if emis_off is not None:
        x_mean = x_mean + emis_off
    var = torch.diagonal(H @ cov @ H.transpose(-1, -2), dim1=-2, dim2=-1) + torch.diagonal(R)
    return Prediction(t, x_mean, var.clamp_min(0).sqrt())


def impute(model: LinearGaussianSSM, x: Tensor, mask: Tensor, mean: Tensor, cov: Tensor,
           u: Tensor | None, t: Tensor) -> Prediction:
    """Predictive of every entry from smoothed state moments mean (B, T, S), cov
    (B, T, S, S): observed entries as :func:`emit`; missing ones x_m = L z + l + e
    conditioned on the observed entries of their step (see lgssm_em)."""
    pred = emit(model, mean, cov, u, t)
    _, emis_off = model.offsets(x.shape[-2], u)
    offset = torch.zeros_like(x) if emis_off is None else emis_off.expand_as(x)
    L, ell, E = missing_entry_moments(x, mask, offset, model.emission_matrix,
                                      model.emission_cov)
    m_mean = batched_mv(L, mean) + ell                                  # (B, T, D)
    m_var = torch.diagonal(L @ cov @ L.transpose(-1, -2) + E, dim1=-2, dim2=-1)
    return Prediction(t, torch.where(mask, pred.mean, m_mean),
                      torch.where(mask, pred.std, m_var.clamp_min(0).sqrt()))


def future_inputs(has_inputs: bool, k: Tensor, u_future: Tensor | None, x: Tensor
                  ) -> Tensor | None:
    """Validated (B, H, U) inputs for steps 1..H, or None for a model without inputs."""
    if not has_inputs:
        return None
    H = k.shape[1]
    if u_future is None or u_future.shape[:2] != k.shape:
        raise DataError(f"the model has inputs: forecast needs u_future of shape (B, H={H}, U)")
    if not (k == torch.arange(1, H + 1, device=k.device)).all():
        raise DataError("with inputs, t_future must be the next H consecutive steps")
    return u_future.to(x)


def predict_ahead(model: LinearGaussianSSM, mean: Tensor, cov: Tensor, k: Tensor,
                  u: Tensor | None, t_future: Tensor) -> Prediction:
    """Predict k (B, H) steps ahead of the filtered state mean (B, S), cov (B, S, S)."""
    A, Q = model.transition_matrix, model.transition_cov
    K = int(k.max())
    trans_off, _ = model.offsets(K, u)                                  # (B|., K, S)
    means, covs = [], []
    for j in range(K):
        mean = batched_mv(A, mean)
        if trans_off is not None:
            mean = mean + trans_off[..., j, :]
        cov = symmetrize(A @ cov @ A.transpose(-1, -2) + Q)
        means.append(mean)
        covs.append(cov)
    pred = emit(model, torch.stack(means, -2), torch.stack(covs, -3), u,
                torch.zeros(mean.shape[0], K, dtype=mean.dtype, device=mean.device))
    idx = (k - 1).unsqueeze(-1).expand(*k.shape, pred.mean.shape[-1])  # (B, H, D)
    return Prediction(t_future, pred.mean.gather(1, idx), pred.std.gather(1, idx))


def sample_paths(model: LinearGaussianSSM, m0: Tensor, P0: Tensor, n: int, T: int,
                 u: Tensor | None) -> Tensor:
    """(n, T, D) ancestral draws: z_0 ~ N(m0, P0), then the transition (constant or with
    a T axis) and the emission."""
    noise = lambda k: torch.randn(n, k, dtype=m0.dtype, device=m0.device)  # noqa: E731
    trans_off, emis_off = model.offsets(T, u)
    Lr = psd_sqrt(model.emission_cov)
    S, D = m0.shape[-1], Lr.shape[-1]
    z = m0 + batched_mv(psd_sqrt(P0), noise(S))
    xs = []
    for t in range(T):
        if t > 0:
            Lq = psd_sqrt(model.param_at("transition_cov", t))
            z = batched_mv(model.param_at("transition_matrix", t), z) + batched_mv(Lq, noise(S))
            if trans_off is not None:
                z = z + trans_off[..., t, :]
        x = batched_mv(model.emission_matrix, z) + batched_mv(Lr, noise(D))
        if emis_off is not None:
            x = x + emis_off[..., t, :]
        xs.append(x)
    return torch.stack(xs, 1)


def observed_moments(x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """Mean (D,) and covariance (D, D) of the observed entries (pairwise-complete)."""
    m = mask.to(x.dtype).reshape(-1, x.shape[-1])
    v = x.reshape(-1, x.shape[-1])
    mean = (v * m).sum(0) / m.sum(0).clamp_min(1)
    c = (v - mean) * m
    return mean, (c.T @ c) / (m.T @ m).clamp_min(1)


def pca_loadings(cov: Tensor, S: int) -> Tensor:
    """(D, S) principal directions scaled by their standard deviation; columns beyond
    D are small random directions."""
    eigval, eigvec = torch.linalg.eigh(cov)
    D = cov.shape[0]
    top = min(S, D)
    W = eigvec[:, -top:].flip(-1) * eigval[-top:].flip(-1).clamp_min(1e-6).sqrt()
    if S > D:
        W = torch.cat([W, 0.1 * torch.randn(D, S - D, dtype=cov.dtype)], 1)
    return W


def regress(moment: Tensor, n: Tensor, n_target: int, blocks, cov_block) -> None:
    """M-step for one regression (transition or emission): learned blocks get their
    columns of W, fixed ones are moved into the target; cov_block gets the residual
    covariance."""
    n_xi = moment.shape[0]
    target = torch.eye(n_target, n_xi, dtype=moment.dtype, device=moment.device)
    features, learned = [], []
    for block, start in blocks:
        if block is None:
            continue
        value = block()
        cols = slice(start, start + value.shape[1])
        if block.learned:
            sel = torch.zeros(value.shape[1], n_xi, dtype=moment.dtype, device=moment.device)
            sel[:, cols] = torch.eye(value.shape[1], dtype=moment.dtype, device=moment.device)
            features.append(sel)
            learned.append(block)
        else:
            target[:, cols] -= value
    W, cov = regression_m_step(moment, n, target, torch.cat(features) if features else None)
    offset = 0
    for block in learned:
        width = block().shape[1]
        block.assign(W[:, offset:offset + width])
        offset += width
    cov_block.assign(cov)


@torch.no_grad()
def m_step(model, stats: EMStatistics, transition: bool = True) -> None:
    """Closed-form M-step of an LGSSM module from one E-step's statistics (transition
    statistics summed over the step groups; ``transition=False`` leaves it alone)."""
    S, D = model.state_dim, model.data_dim
    U = 0 if model.transition_input is None else model.input_dim
    if transition and float(stats.n_transitions.sum()) > 0:
        regress(stats.transition.sum(0), stats.n_transitions.sum(), S,
                 [(model.transition, S), (model.transition_input, 2 * S),
                  (model.transition_bias, 2 * S + U)], model.transition_cov)
    regress(stats.emission, stats.n_steps, D,
             [(model.emission, D), (model.emission_input, D + S),
              (model.emission_bias, D + S + U)], model.emission_cov)
    model.initial.assign(stats.initial_mean, stats.initial_cov)
