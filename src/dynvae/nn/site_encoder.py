"""Amortised site encoders: each time step's features -> a Gaussian pseudo-observation
(y~_t, v~_t) of every latent channel (the GP-VAE's inference network, Fortuin et al. 2020)."""

from __future__ import annotations

import abc
from collections.abc import Sequence

from torch import Tensor, nn
from torch.nn.functional import relu

from dynvae.errors import ConfigError
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


class ConvSiteEncoder(SiteEncoder):
    """A 1-D convolution over time, then an MLP per step: the sites of step t read the
    steps t - k//2 .. t + k//2 (Fortuin et al. 2020 use such a temporal CNN), so a step
    whose entries are missing gets its site from its observed neighbours. Steps beyond
    a sequence's end hold zero features (nothing observed), like missing ones."""

    def __init__(self, feature_dim: int, latent_dim: int, hidden_sizes: Sequence[int],
                 min_var: float = 1e-4, kernel_size: int = 5) -> None:
        super().__init__(feature_dim, latent_dim)
        hidden_sizes = tuple(hidden_sizes) or (feature_dim,)
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ConfigError(f"the site encoder's kernel_size must be odd and >= 1, got "
                              f"{kernel_size}")
        self.conv = nn.Conv1d(feature_dim, hidden_sizes[0], kernel_size,
                              padding=kernel_size // 2)
        self.trunk, width = trunk(hidden_sizes[0], hidden_sizes[1:])
        self.head = GaussianHead(width, latent_dim, min_var=min_var)

    def forward(self, features: Tensor) -> tuple[Tensor, Tensor]:
        h = relu(self.conv(features.transpose(1, 2))).transpose(1, 2)       # (B, T, H)
        return self.head(self.trunk(h))                                     # (B, T, Z) each


# name -> class taking (feature_dim, latent_dim, hidden_sizes, min_var)
SITE_ENCODERS: dict[str, type[SiteEncoder]] = {
    "conv": ConvSiteEncoder,
    "mlp": MLPSiteEncoder,
}
