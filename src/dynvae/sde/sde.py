"""The SDE abstraction: dz = f(t, z) dt + g(t, z) dW (Ito) or o dW (Stratonovich).

An ``SDE`` declares its noise type and its calculus; solvers check both before
stepping. Shapes (B batch, Z latent dim, W noise dim):

- ``drift(t, z)``: (B, Z).
- ``diffusion(t, z)``: (B, Z) for ``NoiseType.DIAGONAL`` (W = Z, g_i may depend on z_i
  only); (B, Z, 1) for ``SCALAR``; (B, Z, W) for ``ADDITIVE`` (independent of z) and
  ``GENERAL``.
- ``t`` is a 0-dim tensor when the whole batch shares one time grid and a (B, 1)
  tensor for per-sequence grids: both broadcast against z.

An SDE that also defines a running cost (e.g. the Girsanov KL integrand of a latent
SDE) subclasses ``SDEWithRunningCost``; ``sdeint`` then integrates it alongside z.
"""

from __future__ import annotations

import abc
import enum

import torch
from torch import Tensor

from dynvae.errors import DataError


class NoiseType(enum.Enum):
    """Structure of the diffusion g, which decides the product g dW and the solvers."""

    DIAGONAL = "diagonal"
    ADDITIVE = "additive"
    SCALAR = "scalar"
    GENERAL = "general"

    def prod(self, g: Tensor, v: Tensor) -> Tensor:
        """g v: the diffusion applied to a noise vector v (B, W) -> (B, Z)."""
        if self is NoiseType.DIAGONAL:
            return g * v
        if self is NoiseType.SCALAR:
            return g.squeeze(-1) * v
        return (g @ v.unsqueeze(-1)).squeeze(-1)

    def noise_dim(self, z_dim: int, g: Tensor) -> int:
        """W, the dimension of the driving Brownian motion."""
        return z_dim if self is NoiseType.DIAGONAL else int(g.shape[-1])


class SDEType(enum.Enum):
    """Which stochastic integral the diffusion term means."""

    ITO = "ito"
    STRATONOVICH = "stratonovich"


class SDE(abc.ABC):
    """Abstract SDE. Subclasses set ``noise`` and ``sde_type`` and define drift and
    diffusion; they may also be ``nn.Module``s with learned parameters."""

    noise: NoiseType = NoiseType.DIAGONAL
    sde_type: SDEType = SDEType.ITO

    @abc.abstractmethod
    def drift(self, t: Tensor, z: Tensor) -> Tensor:
        """f(t, z): (B, Z)."""

    @abc.abstractmethod
    def diffusion(self, t: Tensor, z: Tensor) -> Tensor:
        """g(t, z): (B, Z), (B, Z, 1) or (B, Z, W) depending on ``noise``."""

    def diffusion_and_derivative(self, t: Tensor, z: Tensor) -> tuple[Tensor, Tensor] | None:
        """For diagonal noise whose g_i depends on z through z_i only: (g, d) with
        d_i = dg_i/dz_i, both (B, Z), from one pass (closed form). None (the default): not
        known; Milstein then takes g dg/dz from autograd, a second pass through g."""
        return None


class SDEWithRunningCost(SDE):
    """An SDE with a running cost c(t, z) integrated along the path by ``sdeint``."""

    @abc.abstractmethod
    def running_cost(self, t: Tensor, z: Tensor) -> Tensor:
        """c(t, z): (B,) or (B, C)."""

    def drift_and_cost(self, t: Tensor, z: Tensor) -> tuple[Tensor, Tensor]:
        """(f, c) in one call; override to share work between the two (e.g. a latent
        SDE whose cost is built from its posterior and prior drifts)."""
        return self.drift(t, z), self.running_cost(t, z)


def check_sde(sde: SDE, t: Tensor, z: Tensor) -> tuple[int, tuple[int, ...] | None]:
    """Call the user's drift and diffusion once and check their shapes.

    t: 0-dim or (B, 1) time. z: (B, Z). Returns (W, cost_shape): W the noise dimension,
    cost_shape () for a (B,) running cost, (C,) for (B, C), None without one.
    Raises DataError naming the offending function and the expected shape.
    """
    if not isinstance(sde, SDE):
        raise DataError(f"sde must be a dynvae.sde.SDE, got {type(sde).__name__}")
    if not isinstance(sde.noise, NoiseType) or not isinstance(sde.sde_type, SDEType):
        raise DataError("sde.noise must be a NoiseType and sde.sde_type an SDEType")
    B, Z = z.shape
    with torch.no_grad():
        f = sde.drift(t, z)
        g = sde.diffusion(t, z)
    _expect(f, (B, Z), "drift")
    if sde.noise is NoiseType.DIAGONAL:
        _expect(g, (B, Z), "diffusion (diagonal noise)")
    elif sde.noise is NoiseType.SCALAR:
        _expect(g, (B, Z, 1), "diffusion (scalar noise)")
    else:
        if not isinstance(g, Tensor) or g.dim() != 3 or tuple(g.shape[:2]) != (B, Z):
            raise DataError(f"diffusion ({sde.noise.value} noise) must return (B, Z, W) = "
                            f"({B}, {Z}, W), got {_shape(g)}")
    cost_shape = None
    if isinstance(sde, SDEWithRunningCost):
        with torch.no_grad():
            c = sde.running_cost(t, z)
        if not isinstance(c, Tensor) or c.dim() not in (1, 2) or c.shape[0] != B:
            raise DataError(f"running_cost must return (B,) or (B, C) with B={B}, got {_shape(c)}")
        cost_shape = tuple(c.shape[1:])
    for name, v in (("drift", f), ("diffusion", g)):
        if v.dtype != z.dtype:
            raise DataError(f"{name} returned dtype {v.dtype}, but z has dtype {z.dtype}")
    return sde.noise.noise_dim(Z, g), cost_shape


def _shape(x: object) -> object:
    return tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__


def _expect(x: object, shape: tuple[int, ...], name: str) -> None:
    if not isinstance(x, Tensor) or tuple(x.shape) != shape:
        raise DataError(f"{name} must return shape {shape}, got {_shape(x)}")
