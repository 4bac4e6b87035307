"""The combiner of Krishnan et al. (2017), merging z_{t-1} with a sequence summary."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from dynvae.nn.mlp import GaussianHead


class Combiner(nn.Module):
    """q(z_t | z_{t-1}, context_t) = N(mu(h), diag sigma^2(h)),
    h = 0.5 (tanh(W z_{t-1} + b) + context_t)   (Krishnan et al. 2017, "combiner function").

    context_t: (…, C) a summary of the observations (e.g. an RNN state in [-1, 1]).
    """

    def __init__(self, latent_dim: int, context_dim: int, min_var: float = 1e-4) -> None:
        super().__init__()
        self.latent_to_hidden = nn.Linear(latent_dim, context_dim)
        self.head = GaussianHead(context_dim, latent_dim, min_var=min_var)

    def forward(self, z_prev: Tensor, context: Tensor) -> tuple[Tensor, Tensor]:
        """z_prev (…, Z), context (…, C) -> mean (…, Z), var (…, Z)."""
        h = 0.5 * (torch.tanh(self.latent_to_hidden(z_prev)) + context)   # (…, C)
        return self.head(h)
