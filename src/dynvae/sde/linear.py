"""Linear time-invariant SDEs: exact moments, stationary covariance, discretisation, sampling.

    dz = F z dt + L dbeta,     E[dbeta dbeta^T] = Qc dt

with drift matrix F (S, S), dispersion L (S, W) and spectral density Qc (W, W) of the
driving Brownian motion beta. The solution is a Gaussian process (Sarkka and Solin,
*Applied Stochastic Differential Equations*, 2019, ch. 6):

    mean:        dm/dt = F m                               m(t) = expm(F t) m(0)
    covariance:  dP/dt = F P + P F^T + L Qc L^T            P(t) = A P(0) A^T + Q(t)

with A = expm(F t) and Q(t) = int_0^t expm(F s) L Qc L^T expm(F s)^T ds, computed by
the Van Loan (1978) matrix-fraction trick. When F is stable the process has the
stationary covariance Pinf, the solution of the Lyapunov equation
F Pinf + Pinf F^T + L Qc L^T = 0, and then Q(t) = Pinf - A Pinf A^T.

Every function here is pure and accepts leading batch dims ``*b`` on the matrices and
``(*b, T)`` time steps; everything is differentiable by autograd.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from dynvae.errors import DataError
from dynvae.gaussian import batched_mv, psd_sqrt, symmetrize
from dynvae.timegrid import check_time_grid
from dynvae.utils import broadcast_shapes


def solve_lyapunov(F: Tensor, C: Tensor) -> Tensor:
    """Solve F P + P F^T + C = 0 for P.

    Uses the Kronecker form (I (x) F + F (x) I) vec(P) = -vec(C), which is exact and
    cheap for the small state dims of state-space kernels (S <= ~40).

    Args: F (*b, S, S) stable drift, C (*b, S, S) symmetric.  Returns: P (*b, S, S).
    """
    S = F.shape[-1]
    eye = torch.eye(S, dtype=F.dtype, device=F.device)
    kron = lambda X, Y: (X[..., :, None, :, None] * Y[..., None, :, None, :]).reshape(
        *broadcast_shapes(X.shape[:-2], Y.shape[:-2]), S * S, S * S)
    # row-major vec: vec(F P) = (F (x) I) vec(P), vec(P F^T) = (I (x) F) vec(P)
    M = kron(F, eye) + kron(eye, F)
    vecP = torch.linalg.solve(M, -C.reshape(*C.shape[:-2], S * S, 1))
    return symmetrize(vecP.reshape(*vecP.shape[:-2], S, S))


def van_loan(F: Tensor, noise: Tensor, dt: Tensor) -> tuple[Tensor, Tensor]:
    """Exact discretisation A = expm(F dt), Q = int_0^dt expm(F s) noise expm(F s)^T ds.

    Van Loan (1978): expm([[-F, N], [0, F^T]] dt) = [[E11, E12], [0, E22]] gives
    A = E22^T and Q = E22^T E12. Valid for any F (stable or not).

    Args: F (*b, S, S), noise = L Qc L^T (*b, S, S), dt (*b, T) step lengths >= 0.
    Returns: A (*b, T, S, S), Q (*b, T, S, S) (symmetrised).
    """
    S = F.shape[-1]
    top = torch.cat([-F, noise], -1)
    bottom = torch.cat([torch.zeros_like(F), F.transpose(-1, -2)], -1)
    M = torch.cat([top, bottom], -2).unsqueeze(-3) * dt[..., None, None]   # (*b, T, 2S, 2S)
    E = torch.linalg.matrix_exp(M)
    A = E[..., S:, S:].transpose(-1, -2)
    return A, symmetrize(A @ E[..., :S, S:])


@dataclass(frozen=True)
class LinearSDE:
    """A linear time-invariant SDE dz = F z dt + L dbeta, E[dbeta dbeta^T] = Qc dt.

    Attributes: drift F (*b, S, S), dispersion L (*b, S, W), diffusion Qc (*b, W, W).
    """

    drift: Tensor
    dispersion: Tensor
    diffusion: Tensor

    def __post_init__(self) -> None:
        S = self.drift.shape[-1]
        if self.drift.shape[-2] != S:
            raise DataError(f"drift F must be square, got {tuple(self.drift.shape)}")
        if self.dispersion.shape[-2] != S:
            raise DataError(f"dispersion L must end in ({S}, W), got "
                            f"{tuple(self.dispersion.shape)}")
        W = self.dispersion.shape[-1]
        if tuple(self.diffusion.shape[-2:]) != (W, W):
            raise DataError(f"diffusion Qc must end in ({W}, {W}), got "
                            f"{tuple(self.diffusion.shape)}")

    @property
    def state_dim(self) -> int:
        return self.drift.shape[-1]

    def noise_cov(self) -> Tensor:
        """L Qc L^T, (*b, S, S): the covariance rate the noise injects."""
        L = self.dispersion
        return symmetrize(L @ self.diffusion @ L.transpose(-1, -2))

    def stationary_cov(self) -> Tensor:
        """Pinf (*b, S, S), solving F Pinf + Pinf F^T + L Qc L^T = 0 (F must be stable)."""
        return solve_lyapunov(self.drift, self.noise_cov())

    def mean_ode(self, m: Tensor) -> Tensor:
        """Right-hand side dm/dt = F m for m (*b, S)."""
        return batched_mv(self.drift, m)

    def cov_ode(self, P: Tensor) -> Tensor:
        """Right-hand side dP/dt = F P + P F^T + L Qc L^T for P (*b, S, S)."""
        FP = self.drift @ P
        return FP + FP.transpose(-1, -2) + self.noise_cov()

    def transition(self, dt: Tensor) -> tuple[Tensor, Tensor]:
        """Exact transition over steps dt (*b, T): A, Q (*b, T, S, S) by Van Loan."""
        return van_loan(self.drift, self.noise_cov(), dt)

    def moments(self, m0: Tensor, P0: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """Closed-form mean and covariance of z(t) given z(0) ~ N(m0, P0).

        Args: m0 (*b, S), P0 (*b, S, S), t (*b, T) times >= 0 measured from 0.
        Returns: means (*b, T, S), covariances (*b, T, S, S).
        """
        A, Q = self.transition(t)
        mean = batched_mv(A, m0.unsqueeze(-2))
        cov = symmetrize(A @ P0.unsqueeze(-3) @ A.transpose(-1, -2) + Q)
        return mean, cov

    def sample(self, t: Tensor, z0: Tensor, n_samples: int = 1,
               generator: torch.Generator | None = None) -> Tensor:
        """Exact sample paths on an irregular grid (no discretisation error).

        Args:
            t: (T,) strictly increasing times; the path starts at t[0] with value z0.
            z0: (*b, S) initial states (draw them from N(0, Pinf) for a stationary path).
        Returns: (n_samples, *b, T, S) paths, z_k = A_k z_{k-1} + chol(Q_k) eps_k.
        """
        check_time_grid(t, name="times", ndim=1)
        dt = torch.diff(t, prepend=t[:1])                            # (T,), dt[0] = 0 unused
        A, Q = self.transition(dt)                                   # (*b, T, S, S)
        return sample_linear_gaussian(A, Q, z0, n_samples, generator)


def sample_linear_gaussian(A: Tensor, Q: Tensor, z0: Tensor, n_samples: int = 1,
                           generator: torch.Generator | None = None) -> Tensor:
    """Paths of z_k = A_k z_{k-1} + w_k, w_k ~ N(0, Q_k), k >= 1, from z_0 = z0.

    Args: A, Q (*b, T, S, S) (entry 0 unused); z0 (*b, S).
    Returns: (n_samples, *b, T, S).
    """
    T, S = A.shape[-3], A.shape[-1]
    chol = psd_sqrt(Q[..., 1:, :, :])                                # (*b, T-1, S, S)
    z = z0.expand(n_samples, *z0.shape)                              # (K, *b, S)
    eps = torch.randn((*z.shape[:-1], T - 1, S), dtype=A.dtype, device=A.device,
                      generator=generator)
    noise = batched_mv(chol, eps)                                    # (K, *b, T-1, S)
    path = [z]
    for k in range(1, T):
        z = batched_mv(A[..., k, :, :], z) + noise[..., k - 1, :]
        path.append(z)
    return torch.stack(path, dim=-2)
