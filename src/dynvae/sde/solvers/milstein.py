"""Milstein schemes for commuting noise (diagonal, scalar, additive), Kloeden & Platen
1992, eq. 10.3.3 (Ito) and 10.3.5 (Stratonovich):

    z1 = z + f h + g dW + 1/2 (g . grad g) (dW^2 - h)      (Ito)
    z1 = z + f h + g dW + 1/2 (g . grad g) dW^2            (Stratonovich)

The correction g . grad g comes from the SDE's closed-form derivative where it gives
one (``SDE.diffusion_and_derivative``: diagonal noise, no second pass), else from
autograd (exact), or with ``derivative_free``
from the finite difference (g(z + g sqrt h) - g(z)) / sqrt h (Kloeden & Platen eq.
11.1.5), which costs one diffusion call and no backward pass. The autograd version
keeps a graph whenever grad mode is on (so parameters of g get exact gradients): run
plain simulations under ``torch.no_grad()``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from dynvae.sde.sde import SDE, NoiseType, SDEType
from dynvae.sde.solvers.base import Solver, drift_step, safe_sqrt, scale_cost


def diffusion_directional_derivative(sde: SDE, t: Tensor, z: Tensor) -> tuple[Tensor, Tensor]:
    """g and (grad g) g for diagonal or scalar noise.

    Diagonal: entry i is g_i dg_i/dz_i (a vector-Jacobian product with v = g, exact
    when g_i depends on z only through z_i). Scalar: J g with J = dg/dz (B, Z, Z).
    Returns (g, gdg) with g as the diffusion returns it and gdg (B, Z).
    """
    if torch.compiler.is_compiling():
        # Traceable form: a forward-mode derivative in direction g. J g has entries
        # g_i dg_i/dz_i for diagonal noise (g_i depends on z_i only) and is the scalar
        # noise term directly; parameter gradients flow through it.
        g = sde.diffusion(t, z)
        g_flat = g if sde.noise is NoiseType.DIAGONAL else g.squeeze(-1)

        def flat(zz):
            out = sde.diffusion(t, zz)
            return out if sde.noise is NoiseType.DIAGONAL else out.squeeze(-1)
        # Primal and tangent share one dense layout, as forward-mode views require.
        primal = z.clone(memory_format=torch.contiguous_format)
        tangent = g_flat.clone(memory_format=torch.contiguous_format)
        _, gdg = torch.func.jvp(flat, (primal,), (tangent,))
        return g, gdg
    create = torch.is_grad_enabled()
    with torch.enable_grad():
        zz = z if z.requires_grad else z.detach().requires_grad_(True)
        g = sde.diffusion(t, zz)
        if sde.noise is NoiseType.DIAGONAL:
            (gdg,) = torch.autograd.grad(g, zz, g, create_graph=create, allow_unused=True)
        else:  # J g by double backward: d/du <J^T u, g> = J g.
            gv = g.squeeze(-1)
            u = torch.zeros_like(gv, requires_grad=True)
            (jt_u,) = torch.autograd.grad(gv, zz, u, create_graph=True, allow_unused=True)
            gdg = None
            if jt_u is not None:
                (gdg,) = torch.autograd.grad(jt_u, u, gv, create_graph=create,
                                             allow_unused=True)
    if gdg is None:
        gdg = torch.zeros_like(z)
    if not create:
        g, gdg = g.detach(), gdg.detach()
    return g, gdg


def _diffusion_and_correction(sde: SDE, t: Tensor, z: Tensor) -> tuple[Tensor, Tensor]:
    """g and g dg/dz: in closed form where a diagonal-noise SDE gives its derivative
    (``SDE.diffusion_and_derivative``, one pass), else by autograd."""
    if sde.noise is NoiseType.DIAGONAL:
        known = sde.diffusion_and_derivative(t, z)
        if known is not None:
            g, derivative = known
            return g, g * derivative
    return diffusion_directional_derivative(sde, t, z)


@dataclass(frozen=True)
class _Milstein(Solver):
    derivative_free: bool = False

    strong_order: ClassVar[float] = 1.0
    weak_order: ClassVar[float] = 1.0
    noise_types: ClassVar[frozenset] = frozenset(
        {NoiseType.DIAGONAL, NoiseType.SCALAR, NoiseType.ADDITIVE})
    ito: ClassVar[bool] = True

    def step(self, sde, drift_cost, t0, t1, h, z, dW, H):
        f, c = drift_cost(t0, z)
        noise = sde.noise
        v = dW * dW - h if self.ito else dW * dW  # (B, W)
        if noise is NoiseType.ADDITIVE:
            g = sde.diffusion(t0, z)
            return z + f * h + noise.prod(g, dW), scale_cost(c, h)
        if self.derivative_free:
            g = sde.diffusion(t0, z)
            sq = safe_sqrt(h)
            g_flat = g if noise is NoiseType.DIAGONAL else g.squeeze(-1)
            z_bar = z + g_flat * sq + (f * h if self.ito else 0.0)
            g_bar = sde.diffusion(t0, z_bar)
            g_bar = g_bar if noise is NoiseType.DIAGONAL else g_bar.squeeze(-1)
            gdg = (g_bar - g_flat) / sq
        else:
            g, gdg = _diffusion_and_correction(sde, t0, z)
        # z + f h + g dW + 1/2 gdg v in three autograd operations (the sum of the terms
        # took seven); g dW is the diagonal or scalar noise's product
        g_flat = g if noise is NoiseType.DIAGONAL else g.squeeze(-1)
        z1 = drift_step(z, f, h).addcmul_(g_flat, dW).addcmul_(gdg, v, value=0.5)
        return z1, scale_cost(c, h)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(derivative_free={self.derivative_free})"


@dataclass(frozen=True, repr=False)
class Milstein(_Milstein):
    """Ito Milstein: strong and weak order 1.0, diagonal/scalar/additive noise."""

    sde_type: ClassVar[SDEType] = SDEType.ITO
    ito: ClassVar[bool] = True


@dataclass(frozen=True, repr=False)
class StratonovichMilstein(_Milstein):
    """Stratonovich Milstein: strong and weak order 1.0, diagonal/scalar/additive noise."""

    sde_type: ClassVar[SDEType] = SDEType.STRATONOVICH
    ito: ClassVar[bool] = False
