"""Euler-Maruyama: z1 = z + f(t0, z) h + g(t0, z) dW (Kloeden & Platen 1992, eq. 9.1.1)."""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor

from dynvae.sde.sde import NoiseType, SDEType
from dynvae.sde.solvers.base import Solver, drift_step, scale_cost


class EulerMaruyama(Solver):
    """Strong order 0.5 (1.0 with additive noise), weak order 1.0, Ito, any noise."""

    strong_order: ClassVar[float] = 0.5
    strong_order_by_noise: ClassVar[dict] = {NoiseType.ADDITIVE: 1.0}
    weak_order: ClassVar[float] = 1.0
    sde_type: ClassVar[SDEType] = SDEType.ITO
    noise_types: ClassVar[frozenset] = frozenset(NoiseType)

    def step(self, sde, drift_cost, t0, t1, h, z, dW, H):
        f, c = drift_cost(t0, z)
        g = sde.diffusion(t0, z)
        return _euler_update(sde.noise, z, f, g, h, dW), scale_cost(c, h)


def _euler_update(noise: NoiseType, z: Tensor, f: Tensor, g: Tensor, h, dW: Tensor) -> Tensor:
    """z + f h + g dW with fused kernels for the diagonal case."""
    if noise is NoiseType.DIAGONAL:
        return drift_step(z, f, h).addcmul_(g, dW)
    return z + f * h + noise.prod(g, dW)
