"""Classic SDEs with their exact solutions or exact moments.

All are Ito SDEs acting elementwise on z (B, Z) unless said otherwise; parameters
are floats. Moments are per coordinate, for a deterministic start z0 at time 0.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from dynvae.sde.linear import LinearSDE
from dynvae.sde.sde import SDE, NoiseType, SDEType


def _eye_diffusion(scale: float, z: Tensor) -> Tensor:
    """scale * I as a (B, Z, Z) additive diffusion."""
    B, Z = z.shape
    return (scale * torch.eye(Z, dtype=z.dtype, device=z.device)).expand(B, Z, Z)


class OrnsteinUhlenbeck(SDE):
    """dz = theta (mu - z) dt + sigma dW (additive noise)."""

    noise = NoiseType.ADDITIVE
    sde_type = SDEType.ITO

    def __init__(self, theta: float = 1.0, mu: float = 0.0, sigma: float = 1.0):
        self.theta, self.mu, self.sigma = float(theta), float(mu), float(sigma)

    def drift(self, t: Tensor, z: Tensor) -> Tensor:
        return self.theta * (self.mu - z)

    def diffusion(self, t: Tensor, z: Tensor) -> Tensor:
        return _eye_diffusion(self.sigma, z)

    def mean(self, z0: Tensor, t: Tensor) -> Tensor:
        """E z(t) = mu + (z0 - mu) e^{-theta t}. z0 (B, Z), t (T,) -> (B, T, Z)."""
        decay = torch.exp(-self.theta * t).unsqueeze(-1)  # (T, 1)
        return self.mu + (z0.unsqueeze(-2) - self.mu) * decay

    def variance(self, t: Tensor) -> Tensor:
        """Var z(t) = sigma^2 (1 - e^{-2 theta t}) / (2 theta): (T,)."""
        return self.sigma ** 2 * (-torch.expm1(-2 * self.theta * t)) / (2 * self.theta)

    def sample(self, z0: Tensor, t: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Exact sampling on a grid with the Gaussian transition. z0 (B, Z), t (T,)
        starting at t[0] -> (B, T, Z)."""
        zs = [z0]
        for h in torch.diff(t).tolist():
            m = self.mu + (zs[-1] - self.mu) * math.exp(-self.theta * h)
            v = self.sigma ** 2 * (-math.expm1(-2 * self.theta * h)) / (2 * self.theta)
            eps = torch.randn(z0.shape, generator=generator, dtype=z0.dtype, device=z0.device)
            zs.append(m + math.sqrt(v) * eps)
        return torch.stack(zs, dim=-2)


class GeometricBrownianMotion(SDE):
    """dz = mu z dt + sigma z dW (diagonal multiplicative noise)."""

    noise = NoiseType.DIAGONAL
    sde_type = SDEType.ITO

    def __init__(self, mu: float = 0.5, sigma: float = 0.5):
        self.mu, self.sigma = float(mu), float(sigma)

    def drift(self, t: Tensor, z: Tensor) -> Tensor:
        return self.mu * z

    def diffusion(self, t: Tensor, z: Tensor) -> Tensor:
        return self.sigma * z

    def solution(self, z0: Tensor, t: Tensor, w: Tensor) -> Tensor:
        """Exact z(t) = z0 exp((mu - sigma^2/2)(t - t0) + sigma (W(t) - W(t0))).
        z0 (B, Z), t (T,) or (B, T), w (B, T, Z) = W(t) - W(t0) -> (B, T, Z)."""
        elapsed = (t - t[..., :1]).unsqueeze(-1)
        return z0.unsqueeze(-2) * torch.exp((self.mu - 0.5 * self.sigma ** 2) * elapsed
                                            + self.sigma * w)

    def mean(self, z0: Tensor, t: Tensor) -> Tensor:
        """E z(t) = z0 e^{mu t}: (B, T, Z)."""
        return z0.unsqueeze(-2) * torch.exp(self.mu * t).unsqueeze(-1)

    def variance(self, z0: Tensor, t: Tensor) -> Tensor:
        """Var z(t) = z0^2 e^{2 mu t} (e^{sigma^2 t} - 1): (B, T, Z)."""
        growth = torch.exp(2 * self.mu * t) * torch.expm1(self.sigma ** 2 * t)
        return z0.unsqueeze(-2) ** 2 * growth.unsqueeze(-1)


class BrownianBridge(SDE):
    """dz = (end - z) / (t_end - t) dt + sigma dW on [0, t_end): pinned at z(t_end) = end."""

    noise = NoiseType.ADDITIVE
    sde_type = SDEType.ITO

    def __init__(self, end: float = 0.0, t_end: float = 1.0, sigma: float = 1.0):
        self.end, self.t_end, self.sigma = float(end), float(t_end), float(sigma)

    def drift(self, t: Tensor, z: Tensor) -> Tensor:
        return (self.end - z) / (self.t_end - t)

    def diffusion(self, t: Tensor, z: Tensor) -> Tensor:
        return _eye_diffusion(self.sigma, z)

    def mean(self, z0: Tensor, t: Tensor) -> Tensor:
        """E z(t) = z0 + (end - z0) t / t_end: (B, T, Z)."""
        frac = (t / self.t_end).unsqueeze(-1)
        return z0.unsqueeze(-2) + (self.end - z0.unsqueeze(-2)) * frac

    def variance(self, t: Tensor) -> Tensor:
        """Var z(t) = sigma^2 t (t_end - t) / t_end: (T,)."""
        return self.sigma ** 2 * t * (self.t_end - t) / self.t_end


class CoxIngersollRoss(SDE):
    """dz = kappa (theta - z) dt + sigma sqrt(z) dW, with sqrt(max(z, 0)) so that
    discretisations that step below 0 stay defined (full truncation)."""

    noise = NoiseType.DIAGONAL
    sde_type = SDEType.ITO

    def __init__(self, kappa: float = 1.0, theta: float = 1.0, sigma: float = 0.5):
        self.kappa, self.theta, self.sigma = float(kappa), float(theta), float(sigma)

    @property
    def feller(self) -> bool:
        """2 kappa theta >= sigma^2: the process never reaches 0."""
        return 2 * self.kappa * self.theta >= self.sigma ** 2

    def drift(self, t: Tensor, z: Tensor) -> Tensor:
        return self.kappa * (self.theta - z)

    def diffusion(self, t: Tensor, z: Tensor) -> Tensor:
        return self.sigma * z.clamp_min(0).sqrt()

    def mean(self, z0: Tensor, t: Tensor) -> Tensor:
        """E z(t) = theta + (z0 - theta) e^{-kappa t}: (B, T, Z)."""
        decay = torch.exp(-self.kappa * t).unsqueeze(-1)
        return self.theta + (z0.unsqueeze(-2) - self.theta) * decay

    def variance(self, z0: Tensor, t: Tensor) -> Tensor:
        """Var z(t) = z0 s^2/k (e^{-kt} - e^{-2kt}) + theta s^2/(2k) (1 - e^{-kt})^2."""
        k, s2 = self.kappa, self.sigma ** 2
        e1 = torch.exp(-k * t).unsqueeze(-1)
        return (z0.unsqueeze(-2) * s2 / k * (e1 - e1 ** 2)
                + self.theta * s2 / (2 * k) * (1 - e1) ** 2)


class StochasticLorenz(SDE):
    """Lorenz '63 with multiplicative diagonal noise, z (B, 3):
    dz1 = a1 (z2 - z1) dt + b1 z1 dW1, dz2 = (a2 z1 - z2 - z1 z3) dt + b2 z2 dW2,
    dz3 = (z1 z2 - a3 z3) dt + b3 z3 dW3."""

    noise = NoiseType.DIAGONAL
    sde_type = SDEType.ITO

    def __init__(self, a: tuple[float, float, float] = (10.0, 28.0, 8.0 / 3.0),
                 b: tuple[float, float, float] = (0.1, 0.28, 0.3)):
        self.a, self.b = tuple(float(v) for v in a), tuple(float(v) for v in b)

    def drift(self, t: Tensor, z: Tensor) -> Tensor:
        x, y, w = z.unbind(-1)
        a1, a2, a3 = self.a
        return torch.stack([a1 * (y - x), a2 * x - y - x * w, x * y - a3 * w], dim=-1)

    def diffusion(self, t: Tensor, z: Tensor) -> Tensor:
        return z * torch.tensor(self.b, dtype=z.dtype, device=z.device)


class DoubleWell(SDE):
    """dz = (z - z^3) dt + sigma dW: gradient flow of U(z) = z^4/4 - z^2/2 with noise."""

    noise = NoiseType.ADDITIVE
    sde_type = SDEType.ITO

    def __init__(self, sigma: float = 0.7):
        self.sigma = float(sigma)

    def drift(self, t: Tensor, z: Tensor) -> Tensor:
        return z - z ** 3

    def diffusion(self, t: Tensor, z: Tensor) -> Tensor:
        return _eye_diffusion(self.sigma, z)

    def stationary_log_density(self, z: Tensor) -> Tensor:
        """Unnormalised log p(z) = -2 U(z) / sigma^2 per coordinate (Gibbs density)."""
        return -2.0 * (z ** 4 / 4 - z ** 2 / 2) / self.sigma ** 2


class LinearProcess(SDE):
    """A linear time-invariant SDE dz = F z dt + L dbeta (E dbeta dbeta^T = Qc dt) as an
    additive-noise SDE for ``sdeint``: g = L chol(Qc). Its exact mean and covariance
    come from ``self.linear.moments`` (dynvae.sde.linear, shared with the GP code)."""

    noise = NoiseType.ADDITIVE
    sde_type = SDEType.ITO

    def __init__(self, linear: LinearSDE):
        if linear.drift.dim() != 2:
            raise ValueError("LinearProcess needs unbatched F (S, S), L (S, W), Qc (W, W)")
        self.linear = linear
        self._g = linear.dispersion @ torch.linalg.cholesky(linear.diffusion)  # (S, W)

    def drift(self, t: Tensor, z: Tensor) -> Tensor:
        return z @ self.linear.drift.to(z).T

    def diffusion(self, t: Tensor, z: Tensor) -> Tensor:
        g = self._g.to(z)
        return g.expand(z.shape[0], *g.shape)


def stochastic_lorenz_dataset(n: int, seed: int, *, n_times: int = 100, t_end: float = 2.0,
                              dt: float = 1e-3, dtype: torch.dtype = torch.float32
                              ) -> tuple[Tensor, Tensor]:
    """Sample paths of ``StochasticLorenz`` from z0 ~ N(0, I).

    Solved in float64 with the Milstein scheme at step dt, observed at n_times
    equally spaced times on [0, t_end]. Returns (t (T,), x (n, T, 3)) in ``dtype``.
    """
    from dynvae.sde.sdeint import sdeint
    from dynvae.sde.solvers import Milstein

    if n < 1:
        raise ValueError(f"n must be positive, got {n}")
    gen = torch.Generator().manual_seed(int(seed))
    t = torch.linspace(0.0, t_end, n_times, dtype=torch.float64)
    z0 = torch.randn(n, 3, generator=gen, dtype=torch.float64)
    with torch.no_grad():
        x = sdeint(StochasticLorenz(), z0, t, solver=Milstein(derivative_free=True), dt=dt,
                   generator=gen).z
    return t.to(dtype), x.to(dtype)
