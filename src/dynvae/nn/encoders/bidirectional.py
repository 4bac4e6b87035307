"""q(z_t | z_{t-1}, x_{1:T}): forward and backward LSTMs + combiner (seed, alternatives
after eq. 19). Step t sees the whole sequence, as in the left-right inference networks
of Krishnan et al. (2017), but this is not their ST-LR: the two LSTM states are
concatenated into one context for the combiner 0.5 (tanh(W z_{t-1} + b) + context)
(dynvae.nn.combiner), where ST-LR averages tanh(W z_{t-1} + b) with both states."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from dynvae.nn.encoders.base import CombinerEncoder, reverse_padded


class BidirectionalEncoder(CombinerEncoder):
    """Step t sees the whole sequence: context_t = [forward state over x_{1:t},
    backward state over x_{t:T}], each LSTM of ``hidden_size`` units."""

    reads_future = True

    def __init__(self, feature_dim: int, latent_dim: int, hidden_size: int = 64,
                 min_var: float = 1e-4) -> None:
        super().__init__(feature_dim, latent_dim, 2 * hidden_size, min_var)
        self.forward_rnn = nn.LSTM(feature_dim, hidden_size, batch_first=True)
        self.backward_rnn = nn.LSTM(feature_dim, hidden_size, batch_first=True)

    def summarise(self, features: Tensor, lengths: Tensor) -> Tensor:
        fwd, _ = self.forward_rnn(features)                          # (B, T, C/2)
        bwd, _ = self.backward_rnn(reverse_padded(features, lengths))
        return torch.cat([fwd, reverse_padded(bwd, lengths)], -1)    # (B, T, C)
