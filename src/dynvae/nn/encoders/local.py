"""q(z_t | z_{t-1}, x_t): the local encoder (seed, alternatives after eq. 19)."""

from __future__ import annotations

import torch
from torch import Tensor

from dynvae.nn.encoders.base import CombinerEncoder
from dynvae.nn.mlp import MLP


class LocalEncoder(CombinerEncoder):
    """Each step sees only its own observation: context_t = tanh(MLP(features_t))."""

    def __init__(self, feature_dim: int, latent_dim: int, hidden_size: int = 64,
                 min_var: float = 1e-4) -> None:
        super().__init__(feature_dim, latent_dim, hidden_size, min_var)
        self.net = MLP(feature_dim, (hidden_size,), hidden_size)

    def summarise(self, features: Tensor, lengths: Tensor) -> Tensor:
        return torch.tanh(self.net(features))                      # (B, T, C)
