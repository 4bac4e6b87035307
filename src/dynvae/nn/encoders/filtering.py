"""q(z_t | z_{t-1}, x_{1:t}): forward LSTM + combiner, a filtering encoder (seed,
alternatives after eq. 19)."""

from __future__ import annotations

from torch import Tensor, nn

from dynvae.nn.encoders.base import CombinerEncoder


class FilteringEncoder(CombinerEncoder):
    """Step t sees the past and present observations only, so the same encoder serves
    online filtering."""

    def __init__(self, feature_dim: int, latent_dim: int, hidden_size: int = 64,
                 min_var: float = 1e-4) -> None:
        super().__init__(feature_dim, latent_dim, hidden_size, min_var)
        self.rnn = nn.LSTM(feature_dim, hidden_size, batch_first=True)

    def summarise(self, features: Tensor, lengths: Tensor) -> Tensor:
        out, _ = self.rnn(features)                                  # (B, T, C)
        return out
