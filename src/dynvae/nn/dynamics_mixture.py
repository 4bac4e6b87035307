"""The dynamics parameter network of the Kalman VAE (Fraccaro et al. 2017, sec. 3.3):
LGSSM matrices at each step as a convex combination of K learned base matrices,
    A_t = sum_k alpha_t^k A^k,  B_t = sum_k alpha_t^k B^k,  C_t = sum_k alpha_t^k C^k,
with weights alpha_t = softmax(W h_t + b) from an LSTM h_t over the past pseudo-observations
a_{0:t-1}, so that step t's parameters depend on the past only.

A frame without a pseudo-observation (nothing observed, or padding) enters the LSTM as
[0, 0]: the feed of step t is [a_{t-1} * o_{t-1}, o_{t-1}], o the frame mask.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

LSTMState = tuple[Tensor, Tensor]  # (h, c), each (1, N, H)


class DynamicsMixture(nn.Module):
    """K base matrices A^k (S, S) (identity at start), C^k (P, S), B^k (S, U), and the
    weight network (an LSTM of width ``hidden_size``; none when K = 1, as alpha = 1).

    S: state dim, P: pseudo-observation dim, U: input dim (0: no B).
    """

    def __init__(self, state_dim: int, pseudo_dim: int, input_dim: int, n_matrices: int,
                 hidden_size: int) -> None:
        super().__init__()
        S, P, U, K = state_dim, pseudo_dim, input_dim, n_matrices
        self.n_matrices = K
        self.transition = nn.Parameter(torch.eye(S).expand(K, S, S).clone())
        self.emission = nn.Parameter(torch.randn(K, P, S) / S ** 0.5)
        self.control = nn.Parameter(0.1 * torch.randn(K, S, U)) if U > 0 else None
        if K > 1:
            self.lstm = nn.LSTM(P + 1, hidden_size, batch_first=True)
            self.head = nn.Linear(hidden_size, K)

    @staticmethod
    def feed(a: Tensor, observed: Tensor) -> Tensor:
        """(…, T, P + 1) LSTM inputs [a_{t-1} * o_{t-1}, o_{t-1}] (zeros at t = 0):
        a (…, T, P), observed (…, T) bool."""
        o = observed[..., None].to(a.dtype)
        current = torch.cat([torch.where(observed[..., None], a, torch.zeros_like(a)), o], -1)
        return torch.cat([torch.zeros_like(current[..., :1, :]), current[..., :-1, :]], -2)

    def weights(self, feed: Tensor, state: LSTMState | None = None
                ) -> tuple[Tensor, LSTMState | None]:
        """alpha (N, T, K) from feeds (N, T, P + 1), and the LSTM state after them."""
        if self.n_matrices == 1:
            return feed.new_ones(*feed.shape[:-1], 1), state
        h, state = self.lstm(feed, state)                                   # (N, T, H)
        return torch.softmax(self.head(h), -1), state

    def final_state(self, feed: Tensor, lengths: Tensor) -> LSTMState | None:
        """LSTM state after each row's first ``lengths`` feeds: feed (N, T, P + 1),
        lengths (N,)."""
        if self.n_matrices == 1:
            return None
        packed = nn.utils.rnn.pack_padded_sequence(feed, lengths.cpu(), batch_first=True,
                                                   enforce_sorted=False)
        return self.lstm(packed)[1]

    def matrices(self, alpha: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        """A (…, S, S), C (…, P, S), B (…, S, U) or None for weights alpha (…, K)."""
        mix = lambda base: torch.einsum("...k,kij->...ij", alpha, base)
        return (mix(self.transition), mix(self.emission),
                None if self.control is None else mix(self.control))
