"""q(z_t | z_{t-1}, x_{t:T}): backward LSTM + combiner, the DKF default (seed eq. 16/19)."""

from __future__ import annotations

from torch import Tensor, nn

from dynvae.nn.encoders.base import CombinerEncoder, reverse_padded


class BackwardEncoder(CombinerEncoder):
    """Copies the structure of the true posterior p(z_t | z_{t-1}, x_{t:T}): an LSTM runs
    from each sequence's last valid step back to step t (Krishnan et al. 2017)."""

    reads_future = True

    def __init__(self, feature_dim: int, latent_dim: int, hidden_size: int = 64,
                 min_var: float = 1e-4) -> None:
        super().__init__(feature_dim, latent_dim, hidden_size, min_var)
        self.rnn = nn.LSTM(feature_dim, hidden_size, batch_first=True)

    def summarise(self, features: Tensor, lengths: Tensor) -> Tensor:
        out, _ = self.rnn(reverse_padded(features, lengths))         # (B, T, C)
        return reverse_padded(out, lengths)
