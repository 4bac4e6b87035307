"""Amortised site encoders: each time step's features -> a Gaussian pseudo-observation
(y~_t, v~_t) of every latent channel (the GP-VAE's inference network, Fortuin et al. 2020)."""

from __future__ import annotations

import abc
from collections.abc import Sequence

from torch import Tensor, nn

from dynvae.nn.mlp import GaussianHead, trunk


class SiteEncoder(nn.Module, abc.ABC):
    """Maps features (B, T, F) to site means (B, T, Z) and variances (B, T, Z) > 0."""

    def __init__(self, feature_dim: int, latent_dim: int) -> None:
        super().__init__()
        self.feature_dim, self.latent_dim = feature_dim, latent_dim

    @abc.abstractmethod
    def forward(self, features: Tensor) -> tuple[Tensor, Tensor]:
        """(B, T, F) -> site mean (B, T, Z), site variance (B, T, Z)."""


class MLPSiteEncoder(SiteEncoder):
    """One MLP applied to every step alone: the sites of step t see only x_t (and its mask);
    the GP prior, not the encoder, carries information across time."""

    def __init__(self, feature_dim: int, latent_dim: int, hidden_sizes: Sequence[int],
                 min_var: float = 1e-4) -> None:
        super().__init__(feature_dim, latent_dim)
        self.trunk, width = trunk(feature_dim, hidden_sizes)
        self.head = GaussianHead(width, latent_dim, min_var=min_var)

    def forward(self, features: Tensor) -> tuple[Tensor, Tensor]:
        return self.head(self.trunk(features))                          # (B, T, Z) each
