"""The EM Q-function of the LGSSM from summed statistics, differentiable in the parameters.

    Q(theta; theta0) = E_{p(z, x_mis | x_obs, theta0)}[log p(x, z | theta)]

is a sum of expected Gaussian log-densities whose second moments are the statistics of
dynvae.models.lgssm_em (Dempster, Laird and Rubin 1977; Shumway and Stoffer 1982). Its
gradient at theta = theta0 is the gradient of log p(x_obs | theta0) (Fisher's identity,
Fisher 1925), so one smoother pass without autograd plus a differentiable function of a
few small matrices gives the exact first derivative of the log-likelihood; the
generalised M-step of a continuous-time model maximises the same function.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

from dynvae.models.lgssm_em import EMStatistics


class TransitionGroups(NamedTuple):
    """Transition parameters per group of steps: z_t = A_k z_{t-1} + B_k u_t + b_k + w_t,
    w_t ~ N(0, Q_k). matrix: (K, S, S); cov_factor: (K, S, S) lower-triangular L_k with
    Q_k = L_k L_k^T (taken from the parametrisation, so that a nearly singular Q_k,
    e.g. an MLE on the boundary, needs no Cholesky factorisation); input_gain: (K, S, U)
    or None; bias: (K, S) or None."""

    matrix: Tensor
    cov_factor: Tensor
    input_gain: Tensor | None
    bias: Tensor | None


class EmissionParams(NamedTuple):
    """x_t = H z_t + D u_t + d + v_t, v_t ~ N(0, R = L L^T). matrix (D, S), cov_factor
    (D, D) lower-triangular L, input_gain (D, U) or None, bias (D,) or None."""

    matrix: Tensor
    cov_factor: Tensor
    input_gain: Tensor | None
    bias: Tensor | None


def expected_log_density(L: Tensor, residual_map: Tensor, moment: Tensor, count: Tensor
                         ) -> Tensor:
    """sum over steps of E[log N(r | 0, cov)], r = residual_map xi, cov = L L^T, from the
    summed second moment of xi: -1/2 (count (n log 2 pi + log|cov|) + tr(cov^{-1} E)),
    E = M E[xi xi^T] M^T, by triangular solves with L.

    Args: L (*, n, n) lower-triangular; residual_map (*, n, n_xi); moment
    (*, n_xi, n_xi); count (*).  Returns: (*).
    """
    n = L.shape[-1]
    second = residual_map @ moment @ residual_map.transpose(-1, -2)
    logdet = 2.0 * torch.log(torch.diagonal(L, dim1=-2, dim2=-1)).sum(-1)
    W = torch.linalg.solve_triangular(L, second, upper=False)               # L^{-1} E
    W = torch.linalg.solve_triangular(L, W.transpose(-1, -2), upper=False)  # L^{-1} E L^{-T}
    trace = torch.diagonal(W, dim1=-2, dim2=-1).sum(-1)
    return -0.5 * (count * (n * math.log(2 * math.pi) + logdet) + trace)


def _residual_map(leading: int, matrix: Tensor, gain: Tensor | None, bias: Tensor | None,
                  n_inputs: int) -> Tensor:
    """[I, -matrix, -gain, -bias] (*, n, n + S + U + 1): the map xi -> residual."""
    *batch, n, S = matrix.shape
    eye = torch.eye(leading, dtype=matrix.dtype, device=matrix.device).expand(*batch, n, n)
    zeros = lambda w: matrix.new_zeros((*batch, n, w))
    gain = zeros(n_inputs) if gain is None else gain
    bias = zeros(1) if bias is None else bias.unsqueeze(-1)
    return torch.cat([eye, -matrix, -gain, -bias], -1)


def transition_term(stats: EMStatistics, groups: TransitionGroups) -> Tensor:
    """Expected log-density of all transitions, () (zero without transitions)."""
    S = groups.matrix.shape[-1]
    U = stats.transition.shape[-1] - 2 * S - 1
    present = stats.n_transitions > 0
    if not bool(present.any()):
        return stats.transition.new_zeros(())
    Gm = _residual_map(S, groups.matrix, groups.input_gain, groups.bias, U)  # (K, S, n)
    terms = expected_log_density(groups.cov_factor, Gm, stats.transition, stats.n_transitions)
    return (terms * present).sum()


def emission_term(stats: EMStatistics, emission: EmissionParams) -> Tensor:
    """Expected log-density of all (completed) observations, ()."""
    D = emission.matrix.shape[0]
    S = emission.matrix.shape[1]
    U = stats.emission.shape[-1] - D - S - 1
    Gm = _residual_map(D, emission.matrix, emission.input_gain, emission.bias, U)
    return expected_log_density(emission.cov_factor, Gm, stats.emission, stats.n_steps)


def initial_term(stats: EMStatistics, mean: Tensor, cov_factor: Tensor) -> Tensor:
    """sum over sequences of E[log N(z_0 | mean, L L^T)], (), L = cov_factor (S, S)."""
    d = stats.initial_mean - mean
    second = stats.initial_cov + d.unsqueeze(-1) * d.unsqueeze(-2)
    eye = torch.eye(cov_factor.shape[-1], dtype=cov_factor.dtype, device=cov_factor.device)
    return expected_log_density(cov_factor, eye, stats.n_sequences * second,
                                stats.n_sequences)
