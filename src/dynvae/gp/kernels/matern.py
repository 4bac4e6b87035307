"""Matern kernels of half-integer smoothness nu = p + 1/2 as companion-form SDEs.

    k(tau) = variance exp(-lam |tau|) p!/(2p)! sum_{k=0}^{p} (p+k)!/(k!(p-k)!) (2 lam |tau|)^{p-k},
    lam = sqrt(2 nu) / lengthscale

(Rasmussen and Williams 2006, eq. 4.16). The SDE is the order-(p+1) companion form with
characteristic polynomial (s + lam)^{p+1} and spectral density
Qc = 2 variance sqrt(pi) lam^{2p+1} Gamma(p+1) / Gamma(p+1/2) (Hartikainen and Sarkka 2010).
Hyperparameters: ``lengthscale`` (same convention as scikit-learn's and gpytorch's
Matern kernels) and ``variance`` (the output scale k(0)).
"""

from __future__ import annotations

import math
from abc import abstractmethod

import torch
from torch import Tensor

from dynvae.gp.kernels.base import Kernel, StateSpace


class Matern(Kernel):
    """Half-integer Matern kernel of order ``p`` (nu = p + 1/2); use the subclasses."""

    order: int = -1
    batchable = True

    def __init__(self, lengthscale: float = 1.0, variance: float = 1.0,
                 learn_variance: bool = True, dtype: torch.dtype = torch.float64) -> None:
        super().__init__(dtype)
        self.register_positive("lengthscale", lengthscale)
        self.register_positive("variance", variance, learnable=learn_variance)

    @property
    def lengthscale(self) -> Tensor:
        return self.positive("lengthscale")

    @property
    def variance(self) -> Tensor:
        return self.positive("variance")

    @property
    def rate(self) -> Tensor:
        """lam = sqrt(2 nu) / lengthscale."""
        return math.sqrt(2 * self.order + 1) / self.lengthscale

    @property
    def state_dim(self) -> int:
        return self.order + 1

    @abstractmethod
    def unit_stationary_cov(self, lam: Tensor) -> Tensor:
        """Pinf / variance as a closed form in lam, (S, S)."""

    def state_space(self) -> StateSpace:
        p, lam, S = self.order, self.rate, self.state_dim
        F = torch.diag(torch.ones(S - 1, dtype=lam.dtype, device=lam.device), 1)
        last = torch.stack([-math.comb(S, k) * lam ** (S - k) for k in range(S)])
        F = torch.cat([F[:-1], last.unsqueeze(0)], 0)
        L = torch.zeros(S, 1, dtype=lam.dtype, device=lam.device)
        L[-1, 0] = 1.0
        qc = 2 * math.sqrt(math.pi) * math.gamma(p + 1) / math.gamma(p + 0.5)
        Qc = (qc * self.variance * lam ** (2 * p + 1)).reshape(1, 1)
        H = torch.zeros(1, S, dtype=lam.dtype, device=lam.device)
        H[0, 0] = 1.0
        return StateSpace(F, L, Qc, H, self.variance * self.unit_stationary_cov(lam))

    def transition_matrix(self, dt: Tensor) -> Tensor:
        """Closed form: F + lam I is nilpotent, so expm(F dt) = e^{-lam dt} sum_k (N dt)^k / k!."""
        lam = self.rate
        F = self.state_space().F
        N = F + lam * torch.eye(self.state_dim, dtype=F.dtype, device=F.device)
        dt = dt[..., None, None]
        term = torch.eye(self.state_dim, dtype=F.dtype, device=F.device).expand(
            *dt.shape[:-2], -1, -1)
        total = term
        for k in range(1, self.state_dim):
            term = term @ N * (dt / k)
            total = total + term
        return torch.exp(-lam * dt) * total

    def stationary_covariance(self, tau: Tensor) -> Tensor:
        p, lam = self.order, self.rate
        r = lam * tau.abs()
        poly = sum(math.factorial(p + k) / (math.factorial(k) * math.factorial(p - k))
                   * (2 * r) ** (p - k) for k in range(p + 1))
        return self.variance * math.factorial(p) / math.factorial(2 * p) * poly * torch.exp(-r)


class Matern12(Matern):
    """Matern-1/2 = Ornstein-Uhlenbeck: k = variance exp(-|tau| / lengthscale)."""

    order = 0

    def unit_stationary_cov(self, lam: Tensor) -> Tensor:
        return torch.ones(1, 1, dtype=lam.dtype, device=lam.device)


class Matern32(Matern):
    """Matern-3/2: k = variance (1 + lam|tau|) exp(-lam|tau|), lam = sqrt(3)/lengthscale."""

    order = 1

    def unit_stationary_cov(self, lam: Tensor) -> Tensor:
        one = torch.ones((), dtype=lam.dtype, device=lam.device)
        return torch.diag(torch.stack([one, lam ** 2]))


class Matern52(Matern):
    """Matern-5/2: k = variance (1 + lam|tau| + lam^2 tau^2/3) exp(-lam|tau|), lam = sqrt(5)/ls."""

    order = 2

    def unit_stationary_cov(self, lam: Tensor) -> Tensor:
        # Pinf[i, j] = Cov(f^(i), f^(j)) = (-1)^j k^(i+j)(0) / variance
        one = torch.ones((), dtype=lam.dtype, device=lam.device)
        zero = torch.zeros((), dtype=lam.dtype, device=lam.device)
        kappa = lam ** 2 / 3
        return torch.stack([torch.stack([one, zero, -kappa]),
                            torch.stack([zero, kappa, zero]),
                            torch.stack([-kappa, zero, lam ** 4])])
