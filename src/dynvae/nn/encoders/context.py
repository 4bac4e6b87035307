"""Backward-in-time context of a sequence, the latent SDE's encoder (Li et al. 2020)."""

from __future__ import annotations

from torch import Tensor, nn

from dynvae.nn.encoders.base import reverse_padded


class BackwardContext(nn.Module):
    """A GRU run from each sequence's last valid step back to step k gives c_k, a summary
    of the features at steps k..T-1: features (B, T, F), lengths (B,) -> (B, T, C).
    Padding never reaches valid steps (``reverse_padded``)."""

    def __init__(self, feature_dim: int, hidden_size: int, context_dim: int) -> None:
        super().__init__()
        self.rnn = nn.GRU(feature_dim, hidden_size, batch_first=True)
        self.out = nn.Linear(hidden_size, context_dim)

    def forward(self, features: Tensor, lengths: Tensor) -> Tensor:
        h, _ = self.rnn(reverse_padded(features, lengths))                # (B, T, H)
        return self.out(reverse_padded(h, lengths))                         # (B, T, C)
