"""Solver contract: a solver declares its orders, calculus and noise types.

A step maps z(t0) to z(t1) given the Brownian increment dW = W(t1) - W(t0) and the
space-time Levy area H of the step (used by the order 1.5 scheme only). Step sizes
``h`` are Python floats when the whole batch shares one grid and (B, 1) tensors for
per-sequence grids; times ``t0``, ``t1`` are 0-dim or (B, 1) tensors.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import ClassVar

import torch
from torch import Tensor

from dynvae.errors import ConfigError
from dynvae.sde.sde import SDE, NoiseType, SDEType

# drift_cost(t, z) -> (f (B, Z), running cost (B, C) or None)
DriftCost = Callable[[Tensor, Tensor], tuple[Tensor, Tensor | None]]
StepSize = float | Tensor


class Solver(abc.ABC):
    """Abstract fixed-step SDE solver.

    strong_order: order of E|z_N - z(T)| in h for the supported noise types
    (``strong_order_by_noise`` overrides it per noise type). weak_order: order of
    the error of expectations of smooth functions.
    """

    strong_order: ClassVar[float]
    weak_order: ClassVar[float]
    sde_type: ClassVar[SDEType]
    noise_types: ClassVar[frozenset[NoiseType]]
    strong_order_by_noise: ClassVar[dict[NoiseType, float]] = {}
    needs_levy_area: ClassVar[bool] = False

    def strong_order_for(self, noise: NoiseType) -> float:
        return self.strong_order_by_noise.get(noise, self.strong_order)

    def check(self, sde: SDE) -> None:
        """Raise ConfigError if this solver cannot integrate ``sde``.

        With additive noise the Ito and Stratonovich integrals coincide, so the
        calculus is only checked for the other noise types.
        """
        name = type(self).__name__
        if sde.noise not in self.noise_types:
            supported = ", ".join(sorted(n.value for n in self.noise_types))
            raise ConfigError(f"{name} supports noise types {{{supported}}}, "
                              f"but the SDE declares {sde.noise.value} noise")
        if sde.noise is not NoiseType.ADDITIVE and sde.sde_type is not self.sde_type:
            raise ConfigError(f"{name} integrates {self.sde_type.value} SDEs, but the SDE is "
                              f"{sde.sde_type.value}; convert it with dynvae.sde.ito.to_"
                              f"{self.sde_type.value}(sde) or pick a solver for "
                              f"{sde.sde_type.value} SDEs")

    @abc.abstractmethod
    def step(self, sde: SDE, drift_cost: DriftCost, t0: Tensor, t1: Tensor, h: StepSize,
             z: Tensor, dW: Tensor, H: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """One step: z (B, Z), dW (B, W), H (B, W) or None -> (z1 (B, Z), cost increment
        (B, C) or None)."""

    steps_per_call: ClassVar[int] = 1

    def advance(self, sde: SDE, drift_cost: DriftCost, ts: Tensor, hs: Tensor, z: Tensor,
                dW: Tensor, H: Tensor | None, cost: Tensor | None
                ) -> tuple[Tensor, Tensor | None]:
        """n consecutive steps: ts (n + 1, ...) step times, hs (n, ...) step sizes (0-dim
        or (B, 1) per step), dW and H (n, B, W), cost (B, C) accumulated so far or None.
        Returns (z after each step (n, B, Z), accumulated cost after each step (n, B, C)
        or None). Solvers with ``steps_per_call > 1`` are driven through this method."""
        zs, costs = [], []
        for i in range(dW.shape[0]):
            z, dc = self.step(sde, drift_cost, ts[i], ts[i + 1], hs[i], z, dW[i],
                              None if H is None else H[i])
            zs.append(z)
            if cost is not None:
                cost = cost + dc
                costs.append(cost)
        return torch.stack(zs), (torch.stack(costs) if cost is not None else None)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def scale_cost(c: Tensor | None, h: StepSize) -> Tensor | None:
    """Running cost times the step: c (B, C), h float or (B, 1)."""
    return None if c is None else c * h


def drift_step(z: Tensor, f: Tensor, h: StepSize) -> Tensor:
    """z + f h as a new tensor; one operation when h is a float (a shared grid)."""
    return torch.add(z, f, alpha=h) if isinstance(h, float) else z + f * h


def safe_sqrt(h: StepSize) -> StepSize:
    """sqrt(h), with 1 in place of zero-length steps (whose terms vanish anyway)."""
    if isinstance(h, Tensor):
        return torch.where(h > 0, h, torch.ones_like(h)).sqrt()
    return h ** 0.5 if h > 0 else 1.0
