"""Diagonal diffusions of neural SDEs: one small network per latent coordinate."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn.functional import softplus

from dynvae.errors import ConfigError


class DiagonalDiffusion(nn.Module):
    """g_i(z_i) = min_diffusion + softplus(w2_i . tanh(w1_i z_i + b1_i) + b2_i), i = 1..Z.

    Coordinate i depends on z_i only, as diagonal noise requires (so that Milstein's
    correction g_i dg_i/dz_i is the whole Ito-Stratonovich difference; Li et al. 2020
    use the same per-coordinate structure). The tanh layer keeps every g_i bounded and
    the floor keeps it away from 0, where the Girsanov integrand |(f_q - f_p) / g|^2
    would blow up. All Z networks run as one batched computation.
    """

    def __init__(self, latent_dim: int, hidden: int = 16, min_diffusion: float = 1e-3) -> None:
        super().__init__()
        if latent_dim < 1 or hidden < 1:
            raise ConfigError(f"latent_dim and hidden must be positive, got {latent_dim}, "
                              f"{hidden}")
        if not min_diffusion >= 0:
            raise ConfigError(f"min_diffusion must be >= 0, got {min_diffusion}")
        self.w1 = nn.Parameter(torch.randn(latent_dim, hidden))
        self.b1 = nn.Parameter(torch.randn(latent_dim, hidden) * 0.1)
        self.w2 = nn.Parameter(torch.randn(latent_dim, hidden) / math.sqrt(hidden))
        self.b2 = nn.Parameter(torch.zeros(latent_dim))
        self.min_diffusion = float(min_diffusion)

    def forward(self, z: Tensor) -> Tensor:
        """z (…, Z) -> g (…, Z), positive."""
        h = torch.tanh(z.unsqueeze(-1) * self.w1 + self.b1)                # (…, Z, H)
        return softplus((h * self.w2).sum(-1) + self.b2) + self.min_diffusion

    def value_and_derivative(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """z (…, Z) -> (g, dg_i/dz_i), each (…, Z), in one pass (what Milstein's
        correction needs): dg_i/dz_i = sigmoid(a_i) sum_k w2_ik (1 - h_ik^2) w1_ik with
        a_i = w2_i . h_i + b2_i, h_ik = tanh(w1_ik z_i + b1_ik)."""
        h = torch.tanh(z.unsqueeze(-1) * self.w1 + self.b1)                # (…, Z, H)
        a = (h * self.w2).sum(-1) + self.b2
        slope = ((1 - h * h) * (self.w1 * self.w2)).sum(-1)
        return softplus(a) + self.min_diffusion, torch.sigmoid(a) * slope
