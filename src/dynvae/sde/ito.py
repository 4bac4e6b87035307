"""Ito calculus helpers: Ito <-> Stratonovich drift conversion and Ito's lemma.

For dz = f dt + g dW (Ito) the same process solves dz = (f - c) dt + g o dW
(Stratonovich) with the correction c_i = 1/2 sum_{j,k} g_jk d g_ik / d z_j
(Kloeden & Platen 1992, eq. 4.9.7).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from dynvae.sde.sde import SDE, NoiseType, SDEType
from dynvae.sde.solvers.milstein import diffusion_directional_derivative


def ito_correction(sde: SDE, t: Tensor, z: Tensor) -> Tensor:
    """c(t, z) = 1/2 sum_k (grad g_k) g_k: (B, Z). Differentiable when grad is enabled."""
    noise = sde.noise
    if noise is NoiseType.ADDITIVE:
        return torch.zeros_like(z)
    if noise in (NoiseType.DIAGONAL, NoiseType.SCALAR):
        return 0.5 * diffusion_directional_derivative(sde, t, z)[1]
    create = torch.is_grad_enabled()
    with torch.enable_grad():
        zz = z if z.requires_grad else z.detach().requires_grad_(True)
        g = sde.diffusion(t, zz)  # (B, Z, W)
        out = torch.zeros_like(z)
        for k in range(g.shape[-1]):  # J_k g_k by double backward, one noise column at a time
            gk = g[..., k]
            u = torch.zeros_like(gk, requires_grad=True)
            (jt_u,) = torch.autograd.grad(gk, zz, u, create_graph=True, allow_unused=True)
            if jt_u is not None:
                (jg,) = torch.autograd.grad(jt_u, u, gk, create_graph=create)
                out = out + jg
    return 0.5 * (out if create else out.detach())


class _ConvertedSDE(SDE):
    """The same process written in the other calculus."""

    def __init__(self, base: SDE, sde_type: SDEType, sign: float):
        self.base, self.sde_type, self.noise, self._sign = base, sde_type, base.noise, sign

    def drift(self, t: Tensor, z: Tensor) -> Tensor:
        return self.base.drift(t, z) + self._sign * ito_correction(self.base, t, z)

    def diffusion(self, t: Tensor, z: Tensor) -> Tensor:
        return self.base.diffusion(t, z)


def to_stratonovich(sde: SDE) -> SDE:
    """An Ito SDE rewritten as a Stratonovich SDE with drift f - c (same process)."""
    if sde.sde_type is SDEType.STRATONOVICH:
        return sde
    return _ConvertedSDE(sde, SDEType.STRATONOVICH, -1.0)


def to_ito(sde: SDE) -> SDE:
    """A Stratonovich SDE rewritten as an Ito SDE with drift f + c (same process)."""
    if sde.sde_type is SDEType.ITO:
        return sde
    return _ConvertedSDE(sde, SDEType.ITO, 1.0)


def ito_lemma(phi: Callable[[Tensor, Tensor], Tensor], sde: SDE, t: Tensor, z: Tensor
              ) -> tuple[Tensor, Tensor]:
    """Drift and diffusion of y = phi(t, z) for an Ito SDE, by Ito's lemma:

        dy = (d_t phi + grad phi . f + 1/2 tr(g g^T hess phi)) dt + grad phi^T g dW.

    phi: (t (B, 1), z (B, Z)) -> (B,). t: 0-dim or (B, 1). z: (B, Z).
    Returns (drift (B,), diffusion (B, W)).
    """
    if sde.sde_type is not SDEType.ITO:
        raise ValueError("ito_lemma needs an Ito SDE; convert it with to_ito(sde)")
    B, Z = z.shape
    with torch.enable_grad():
        tt = torch.as_tensor(t, dtype=z.dtype, device=z.device).expand(B, 1).clone()
        tt.requires_grad_(True)
        zz = z.detach().clone().requires_grad_(True)
        y = phi(tt, zz)  # (B,)
        dy_dt, dy_dz = torch.autograd.grad(y.sum(), (tt, zz), create_graph=True,
                                           allow_unused=True)
        dy_dt = torch.zeros(B, 1, dtype=z.dtype, device=z.device) if dy_dt is None else dy_dt
        rows = []
        for i in range(Z):  # Hessian row by row; None means phi is linear in z
            row = (torch.autograd.grad(dy_dz[:, i].sum(), zz, retain_graph=True,
                                       allow_unused=True)[0] if dy_dz.requires_grad else None)
            rows.append(torch.zeros_like(z) if row is None else row.detach())
        hess = torch.stack(rows, dim=1)  # (B, Z, Z)
    with torch.no_grad():
        f = sde.drift(tt.detach(), z)
        g = _full_diffusion(sde, tt.detach(), z)  # (B, Z, W)
    grad = dy_dz.detach()
    gg = g @ g.transpose(-1, -2)
    drift = dy_dt.detach().squeeze(-1) + (grad * f).sum(-1) + 0.5 * (gg * hess).sum((-2, -1))
    diffusion = (grad.unsqueeze(-1) * g).sum(-2)
    return drift, diffusion


def _full_diffusion(sde: SDE, t: Tensor, z: Tensor) -> Tensor:
    """The diffusion as a (B, Z, W) matrix whatever the noise type."""
    g = sde.diffusion(t, z)
    return torch.diag_embed(g) if sde.noise is NoiseType.DIAGONAL else g
