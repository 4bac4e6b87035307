"""Quasi-periodic kernel: a Matern envelope times a periodic kernel (Solin and Sarkka 2014).

    k(tau) = variance * k_Matern(tau; decay_lengthscale) * k_per(tau; period, lengthscale)

with both factors at unit variance, so the only output scale is ``variance`` (held by
the Matern envelope). The periodic factor follows :mod:`dynvae.gp.kernels.periodic`
(scikit-learn's ExpSineSquared convention). State dim S = (p + 1) (2 order + 1).
"""

from __future__ import annotations

import torch

from dynvae.gp.kernels.composite import Product
from dynvae.gp.kernels.matern import Matern, Matern32
from dynvae.gp.kernels.periodic import Periodic


class QuasiPeriodic(Product):
    """Matern(decay) x Periodic; ``decay`` picks the envelope's Matern class."""

    def __init__(self, period: float = 1.0, lengthscale: float = 1.0,
                 decay_lengthscale: float = 10.0, variance: float = 1.0, order: int = 6,
                 decay: type[Matern] = Matern32, dtype: torch.dtype = torch.float64) -> None:
        super().__init__(decay(decay_lengthscale, variance, dtype=dtype),
                         Periodic(period, lengthscale, 1.0, order, learn_variance=False,
                                  dtype=dtype))
