"""Kernel names for the command line and config files, and a parser for sums of products.

``parse_kernel("matern52+quasiperiodic", init)`` builds Matern52() + QuasiPeriodic(); ``*``
binds tighter than ``+``. A new kernel is one new entry in ``KERNELS``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import reduce

from dynvae.errors import ConfigError
from dynvae.gp.kernels.base import Kernel
from dynvae.gp.kernels.matern import Matern12, Matern32, Matern52
from dynvae.gp.kernels.periodic import Periodic
from dynvae.gp.kernels.quasiperiodic import QuasiPeriodic


@dataclass(frozen=True)
class KernelInit:
    """Initial hyperparameters given to every kernel a spec names."""

    lengthscale: float = 1.0
    period: float = 1.0
    variance: float = 1.0
    order: int = 6
    decay_lengthscale: float | None = None   # quasi-periodic envelope; default 5 periods


KERNELS: dict[str, Callable[[KernelInit], Kernel]] = {
    "matern12": lambda c: Matern12(c.lengthscale, c.variance),
    "matern32": lambda c: Matern32(c.lengthscale, c.variance),
    "matern52": lambda c: Matern52(c.lengthscale, c.variance),
    "periodic": lambda c: Periodic(c.period, 1.0, c.variance, c.order),
    "quasiperiodic": lambda c: QuasiPeriodic(
        c.period, 1.0, c.decay_lengthscale or 5 * c.period, c.variance, c.order),
}


def parse_kernel(spec: str, init: KernelInit | None = None) -> Kernel:
    """Build a kernel from a spec such as ``"matern52+quasiperiodic"`` or ``"matern32*periodic"``."""
    init = init or KernelInit()

    def build(name: str) -> Kernel:
        name = name.strip().lower()
        if name not in KERNELS:
            raise ConfigError(f"unknown kernel {name!r} in {spec!r}; known: {sorted(KERNELS)}")
        return KERNELS[name](init)

    terms = [reduce(lambda a, b: a * b, [build(f) for f in term.split("*")])
             for term in spec.split("+")]
    return reduce(lambda a, b: a + b, terms)
