"""Periodic kernel as a sum of stochastic resonators (Solin and Sarkka 2014).

Convention (the same as scikit-learn's ``ExpSineSquared``):

    k(tau) = variance * exp(-2 sin^2(pi tau / period) / lengthscale^2).

gpytorch's ``PeriodicKernel`` divides by its lengthscale unsquared: its lengthscale
equals our lengthscale^2 (and its ``period_length`` our ``period``).

With w0 = 2 pi / period and z = lengthscale^-2, exp(z cos(w0 tau)) expands in modified
Bessel functions, exp(z cos x) = I_0(z) + 2 sum_{j>=1} I_j(z) cos(j x), so

    k(tau) = variance * sum_{j=0}^{J} q_j^2 cos(j w0 tau),
    q_0^2 = I_0(z) e^{-z},   q_j^2 = 2 I_j(z) e^{-z}     (Solin and Sarkka 2014, eq. 7-8).

Each harmonic j >= 1 is a noise-free 2-d rotation dz_j = [[0, -j w0], [j w0, 0]] z_j dt
started at N(0, variance q_j^2 I_2), of which f reads the first coordinate; the constant
harmonic j = 0 needs one coordinate only (its rotation is the identity and f never reads
the second one, an independent state that would only cost work), so the SDE has state
dim S = 2 J + 1 and Qc = 0. The truncation error falls super-exponentially with the
order J (``order``, default 6).
:meth:`Periodic.covariance` is the order-J series the SDE represents;
:meth:`Periodic.exact_covariance` is the untruncated kernel.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from dynvae.errors import ConfigError
from dynvae.gp.kernels.base import Kernel, StateSpace, block_diag


def scaled_bessel_i(max_order: int, z: Tensor) -> Tensor:
    """I_j(z) exp(-z) for j = 0..max_order, (max_order + 1,), differentiable in z > 0.

    Power series I_j(z) = sum_k (z/2)^{2k+j} / (k! (k+j)!) summed in log space; the
    number of terms covers the Poisson-like bulk of the series (peak near k = z/2). Above
    z = 1000 (a cycle lengthscale under 0.032) the large-argument expansion
    I_j(z) e^{-z} ~ (2 pi z)^{-1/2} sum_k (-1)^k a_k(j) / z^k (Abramowitz and Stegun
    9.7.1) to 8 terms, accurate to rounding there, replaces the ever longer series.
    """
    zf = float(z.detach())
    j = torch.arange(max_order + 1, dtype=z.dtype, device=z.device)[:, None]
    if zf > _ASYMPTOTIC_Z:
        mu = 4 * j ** 2                                               # (J+1, 1)
        k = torch.arange(1, 9, dtype=z.dtype, device=z.device)[None, :]
        ratios = -(mu - (2 * k - 1) ** 2) / (8 * k * z)              # a_k / a_{k-1} / z, signed
        terms = torch.cumprod(ratios, -1)                            # (J+1, 8)
        return (1 + terms.sum(-1)) / torch.sqrt(2 * math.pi * z)
    n_terms = int(zf + 12 * math.sqrt(zf) + 40)
    k = torch.arange(n_terms, dtype=z.dtype, device=z.device)[None, :]
    log_terms = ((2 * k + j) * torch.log(z / 2) - torch.lgamma(k + 1) - torch.lgamma(k + j + 1)
                 - z)
    return torch.logsumexp(log_terms, -1).exp()


_ASYMPTOTIC_Z = 1000.0


class Periodic(Kernel):
    """Periodic kernel, Bessel-series state-space approximation of order ``order``."""

    def __init__(self, period: float = 1.0, lengthscale: float = 1.0, variance: float = 1.0,
                 order: int = 6, learn_variance: bool = True,
                 dtype: torch.dtype = torch.float64) -> None:
        super().__init__(dtype)
        if int(order) != order or order < 1:
            raise ConfigError(f"Periodic order must be an integer >= 1, got {order}")
        self.order = int(order)
        self.register_positive("period", period)
        self.register_positive("lengthscale", lengthscale)
        self.register_positive("variance", variance, learnable=learn_variance)

    @property
    def period(self) -> Tensor:
        return self.positive("period")

    @property
    def lengthscale(self) -> Tensor:
        return self.positive("lengthscale")

    @property
    def variance(self) -> Tensor:
        return self.positive("variance")

    @property
    def state_dim(self) -> int:
        return 2 * self.order + 1

    def coefficients(self) -> Tensor:
        """variance * q_j^2 for j = 0..order, (order + 1,)."""
        q2 = scaled_bessel_i(self.order, self.lengthscale ** -2)
        q2 = torch.cat([q2[:1], 2 * q2[1:]])
        return self.variance * q2

    def _frequencies(self) -> Tensor:
        j = torch.arange(self.order + 1, dtype=self.dtype, device=self.device)
        return j * (2 * math.pi / self.period)                       # (J+1,)

    def state_space(self) -> StateSpace:
        w = self._frequencies()
        rot = torch.tensor([[0.0, -1.0], [1.0, 0.0]], dtype=w.dtype, device=w.device)
        F = block_diag([w.new_zeros(1, 1)] + [wj * rot for wj in w[1:]])
        c = self.coefficients()
        Pinf = torch.diag(torch.cat([c[:1], c[1:].repeat_interleave(2)]))
        S = self.state_dim
        H = torch.zeros(1, S, dtype=w.dtype, device=w.device)
        H[0, 0] = 1.0                                                # the constant z_0
        H[0, 1::2] = 1.0                                             # first of each pair
        L = torch.eye(S, dtype=w.dtype, device=w.device)
        return StateSpace(F, L, torch.zeros(S, S, dtype=w.dtype, device=w.device), H, Pinf)

    def transition_matrix(self, dt: Tensor) -> Tensor:
        """Closed form: 1 for the constant harmonic, then block-diagonal rotations by angle
        j w0 dt, (*b, S, S)."""
        angle = dt[..., None] * self._frequencies()[1:]              # (*b, J)
        c, s = torch.cos(angle), torch.sin(angle)
        R = torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], -2)  # (*b, J, 2, 2)
        n = self.order
        eye = torch.eye(n, dtype=dt.dtype, device=dt.device)
        rotations = (eye[:, None, :, None] * R.unsqueeze(-2)).reshape(*dt.shape, 2 * n, 2 * n)
        return block_diag([dt.new_ones(*dt.shape, 1, 1), rotations])

    def discretize(self, dt: Tensor) -> tuple[Tensor, Tensor]:
        """Rotations preserve each harmonic's N(0, q_j^2 I_2): Q = 0 exactly, (*b, S, S)."""
        A = self.transition_matrix(dt)
        return A, torch.zeros_like(A)

    def stationary_covariance(self, tau: Tensor) -> Tensor:
        """The order-J series sum_j variance q_j^2 cos(j w0 tau) the SDE represents."""
        return (self.coefficients() * torch.cos(tau[..., None] * self._frequencies())).sum(-1)

    def exact_covariance(self, tau: Tensor) -> Tensor:
        """The untruncated periodic kernel at lags tau (any shape)."""
        s = torch.sin(math.pi * tau / self.period)
        return self.variance * torch.exp(-2 * s ** 2 / self.lengthscale ** 2)
