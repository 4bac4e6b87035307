"""State-space kernels: stationary GP covariances written as linear time-invariant SDEs."""

from dynvae.gp.kernels.base import Kernel, StateSpace
from dynvae.gp.kernels.composite import Product, Sum
from dynvae.gp.kernels.matern import Matern, Matern12, Matern32, Matern52
from dynvae.gp.kernels.periodic import Periodic
from dynvae.gp.kernels.quasiperiodic import QuasiPeriodic
from dynvae.gp.kernels.registry import KERNELS, KernelInit, parse_kernel

__all__ = [
    "KERNELS", "Kernel", "KernelInit", "Matern", "Matern12", "Matern32", "Matern52", "Periodic",
    "Product", "QuasiPeriodic", "StateSpace", "Sum", "parse_kernel",
]
