"""Stratonovich Heun (trapezoidal predictor-corrector), Rumelin 1982,
"Numerical treatment of stochastic differential equations":

    z' = z + f(t0, z) h + g(t0, z) dW
    z1 = z + (f(t0, z) + f(t1, z')) h / 2 + (g(t0, z) + g(t1, z')) dW / 2
"""

from __future__ import annotations

from typing import ClassVar

from dynvae.sde.sde import NoiseType, SDEType
from dynvae.sde.solvers.base import Solver


class Heun(Solver):
    """Strong order 1.0 for commuting noise (diagonal, scalar, additive), 0.5 for
    general noise; weak order 1.0; Stratonovich."""

    strong_order: ClassVar[float] = 1.0
    strong_order_by_noise: ClassVar[dict] = {NoiseType.GENERAL: 0.5}
    weak_order: ClassVar[float] = 1.0
    sde_type: ClassVar[SDEType] = SDEType.STRATONOVICH
    noise_types: ClassVar[frozenset] = frozenset(NoiseType)

    def step(self, sde, drift_cost, t0, t1, h, z, dW, H):
        f, c = drift_cost(t0, z)
        g_dw = sde.noise.prod(sde.diffusion(t0, z), dW)
        z_pred = z + f * h + g_dw
        f1, c1 = drift_cost(t1, z_pred)
        g1_dw = sde.noise.prod(sde.diffusion(t1, z_pred), dW)
        z1 = z + 0.5 * ((f + f1) * h + g_dw + g1_dw)
        return z1, None if c is None else 0.5 * (c + c1) * h
