"""Euler-Heun for Stratonovich SDEs: Euler in the drift, Heun in the diffusion
(Burrage, Burrage & Tian 2004, "Numerical methods for strong solutions of SDEs"):

    z' = z + g(t0, z) dW
    z1 = z + f(t0, z) h + (g(t0, z) + g(t0, z')) dW / 2
"""

from __future__ import annotations

from typing import ClassVar

from dynvae.sde.sde import NoiseType, SDEType
from dynvae.sde.solvers.base import Solver, scale_cost


class EulerHeun(Solver):
    """Strong order 1.0 for commuting noise, 0.5 for general noise; weak order 1.0;
    Stratonovich. One drift evaluation per step."""

    strong_order: ClassVar[float] = 1.0
    strong_order_by_noise: ClassVar[dict] = {NoiseType.GENERAL: 0.5}
    weak_order: ClassVar[float] = 1.0
    sde_type: ClassVar[SDEType] = SDEType.STRATONOVICH
    noise_types: ClassVar[frozenset] = frozenset(NoiseType)

    def step(self, sde, drift_cost, t0, t1, h, z, dW, H):
        f, c = drift_cost(t0, z)
        g_dw = sde.noise.prod(sde.diffusion(t0, z), dW)
        g1_dw = sde.noise.prod(sde.diffusion(t0, z + g_dw), dW)
        return z + f * h + 0.5 * (g_dw + g1_dw), scale_cost(c, h)
