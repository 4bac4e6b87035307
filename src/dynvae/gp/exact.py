"""Dense exact GP regression in torch: the O(T^3) reference for the state-space GP.

Independent of the Kalman code: it forms the Gram matrix k(t_i, t_j) from the kernel's
covariance function and uses a Cholesky factorisation (Rasmussen and Williams 2006,
Algorithm 2.1). Zero prior mean, Gaussian noise.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from dynvae.gp.kernels.base import Kernel


def _observed(t: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    keep = ~torch.isnan(y)
    return t[keep], y[keep]


def exact_log_marginal_likelihood(kernel: Kernel, t: Tensor, y: Tensor,
                                  noise_variance: Tensor | float) -> Tensor:
    """log N(y | 0, K + noise I) over the observed (non-NaN) entries.

    Args: t (T,) times, y (T,) values with NaN for missing.  Returns: scalar.
    """
    t, y = _observed(t, y)
    K = kernel.covariance(t, t) + noise_variance * torch.eye(len(t), dtype=t.dtype,
                                                             device=t.device)
    L = torch.linalg.cholesky(K)
    alpha = torch.cholesky_solve(y[:, None], L)[:, 0]
    return (-0.5 * (y * alpha).sum() - torch.log(torch.diagonal(L)).sum()
            - 0.5 * len(y) * math.log(2 * math.pi))


def exact_posterior(kernel: Kernel, t: Tensor, y: Tensor, noise_variance: Tensor | float,
                    t_new: Tensor) -> tuple[Tensor, Tensor]:
    """Posterior mean and variance of the latent f at t_new (N,) -> (N,), (N,)."""
    t, y = _observed(t, y)
    K = kernel.covariance(t, t) + noise_variance * torch.eye(len(t), dtype=t.dtype,
                                                             device=t.device)
    L = torch.linalg.cholesky(K)
    Ks = kernel.covariance(t_new, t)                                    # (N, T)
    mean = Ks @ torch.cholesky_solve(y[:, None], L)[:, 0]
    V = torch.linalg.solve_triangular(L, Ks.T, upper=False)            # (T, N)
    prior = kernel.stationary_covariance(torch.zeros_like(t_new))
    return mean, prior - V.pow(2).sum(0)
