"""Girsanov's theorem for two diagonal-noise Ito SDEs that share their diffusion.

Posterior Q: dz = f_q(t, z) dt + g(t, z) dW and prior P: dz = f_p(t, z) dt + g(t, z) dW,
with g diagonal and positive. With u = (f_q - f_p) / g (Li et al. 2020, "Scalable
gradients for stochastic differential equations", sec. 5; Girsanov's theorem), along a
path of Q driven by the Q-Brownian motion W:

    log dP/dQ [t_0, t] = - int u . dW - 1/2 int |u|^2 ds,
    KL(Q || P) on [t_0, t] = E_Q int 1/2 |u|^2 ds     (the stochastic integral has mean 0).

``GirsanovKL`` is Q with the running cost 1/2 |u|^2, which ``sdeint`` integrates next
to z: its value at time t is the KL integrand of the sampled path.

``GirsanovLogRatio`` appends l = log dP/dQ to the state, d[z; l] = [f_q; -|u|^2 / 2] dt
+ [diag g; -u^T] dW: one Brownian motion drives both, so the noise type is general.
Euler-Maruyama then gives l_{n+1} = l_n - u_n . dW_n - |u_n|^2 h_n / 2, which is exactly
log N(z_{n+1} | z_n + f_p h, g^2 h) - log N(z_{n+1} | z_n + f_q h, g^2 h), the log-ratio
of the Euler-Maruyama transition densities of P and Q: importance weights built from
it are exact for the discretised model, and E_Q[exp(l)] = 1 holds for every step size.

Shapes: z (B, Z); t a 0-dim tensor (shared grid) or (B, 1) (per-sequence grids).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from dynvae.sde.sde import SDE, NoiseType, SDEType, SDEWithRunningCost

# (t, z (B, Z)) -> (B, Z): a drift, or the diagonal of a diffusion.
VectorField = Callable[[Tensor, Tensor], Tensor]
# (t, z) -> (g, dg/dz) of a diagonal diffusion (see SDE.diffusion_and_derivative)
DiffusionDerivative = Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]


class DiagonalSDE(SDE):
    """The Ito SDE dz = f(t, z) dt + diag(g(t, z)) dW from two callables (B, Z) -> (B, Z);
    ``derivative`` (optional) gives (g, dg/dz) in one pass for Milstein."""

    noise = NoiseType.DIAGONAL
    sde_type = SDEType.ITO

    def __init__(self, drift: VectorField, diffusion: VectorField,
                 derivative: DiffusionDerivative | None = None) -> None:
        self._drift, self._diffusion, self._derivative = drift, diffusion, derivative

    def diffusion_and_derivative(self, t: Tensor, z: Tensor) -> tuple[Tensor, Tensor] | None:
        return None if self._derivative is None else self._derivative(t, z)

    def drift(self, t: Tensor, z: Tensor) -> Tensor:
        return self._drift(t, z)

    def diffusion(self, t: Tensor, z: Tensor) -> Tensor:
        return self._diffusion(t, z)


class GirsanovKL(SDEWithRunningCost):
    """Q: dz = f_q dt + diag(g) dW, with running cost 1/2 |(f_q - f_p) / g|^2, (B,); with
    ``per_dimension`` its terms 1/2 u_i^2 apart, (B, Z): the KL of each latent dimension
    (they add up to the KL; for free bits and the collapse diagnostic)."""

    noise = NoiseType.DIAGONAL
    sde_type = SDEType.ITO

    def __init__(self, posterior_drift: VectorField, prior_drift: VectorField,
                 diffusion: VectorField, derivative: DiffusionDerivative | None = None,
                 per_dimension: bool = False) -> None:
        self.posterior_drift, self.prior_drift = posterior_drift, prior_drift
        self._diffusion, self._derivative = diffusion, derivative
        self.per_dimension = per_dimension

    def diffusion_and_derivative(self, t: Tensor, z: Tensor) -> tuple[Tensor, Tensor] | None:
        """(g, dg/dz) from ``derivative`` (optional; see SDE.diffusion_and_derivative)."""
        return None if self._derivative is None else self._derivative(t, z)

    def drift(self, t: Tensor, z: Tensor) -> Tensor:
        return self.posterior_drift(t, z)

    def diffusion(self, t: Tensor, z: Tensor) -> Tensor:
        return self._diffusion(t, z)

    def drift_difference(self, t: Tensor, z: Tensor) -> tuple[Tensor, Tensor]:
        """(f_q, u = (f_q - f_p) / g), both (B, Z); u is exactly 0 where f_q == f_p."""
        f_q = self.posterior_drift(t, z)
        return f_q, (f_q - self.prior_drift(t, z)) / self._diffusion(t, z)

    def running_cost(self, t: Tensor, z: Tensor) -> Tensor:
        return self.drift_and_cost(t, z)[1]

    def drift_and_cost(self, t: Tensor, z: Tensor) -> tuple[Tensor, Tensor]:
        f_q, u = self.drift_difference(t, z)
        cost = 0.5 * u.pow(2)                                               # (B, Z)
        return f_q, cost if self.per_dimension else cost.sum(-1)           # (B, Z), (B,)


class GirsanovLogRatio(SDE):
    """State s = [z, l] (B, Z + 1): z follows Q and l = log dP/dQ of its path so far
    (start l at 0). Solve it with Euler-Maruyama (see the module docstring)."""

    noise = NoiseType.GENERAL
    sde_type = SDEType.ITO

    def __init__(self, kl_sde: GirsanovKL) -> None:
        self.kl_sde = kl_sde
        self._last: tuple | None = None

    def _parts(self, t: Tensor, s: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(z, f_q, u) at (t, s). A solver asks for the drift and the diffusion at the same
        (t, s) (Euler-Maruyama does): the second call reuses the first's networks, and
        passes the same z on to the diffusion (which ``FusedPosterior`` recognises)."""
        last = self._last
        if last is not None and last[0] is s and last[1] is t and last[2] == s._version:
            return last[3]
        z = s[..., :-1]
        parts = (z, *self.kl_sde.drift_difference(t, z))
        self._last = (s, t, s._version, parts)
        return parts

    def drift(self, t: Tensor, s: Tensor) -> Tensor:
        _, f_q, u = self._parts(t, s)
        return torch.cat([f_q, -0.5 * u.pow(2).sum(-1, keepdim=True)], -1)  # (B, Z + 1)

    def diffusion(self, t: Tensor, s: Tensor) -> Tensor:
        z, _, u = self._parts(t, s)
        g = torch.diag_embed(self.kl_sde.diffusion(t, z))                   # (B, Z, Z)
        return torch.cat([g, -u.unsqueeze(-2)], -2)                         # (B, Z + 1, Z)
