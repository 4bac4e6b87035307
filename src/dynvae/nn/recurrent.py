"""Recurrent building blocks: GRU passes over padded batches and one-step updates, and
sequence summaries that let step t see a chosen part of the sequence."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from dynvae.errors import ConfigError
from dynvae.nn.encoders.base import reverse_padded


def run_gru(rnn: nn.Module, inputs: Tensor, h0: Tensor | None = None) -> Tensor:
    """States after every step of a batch-first GRU: inputs (N, T, F), h0 (N, H) or None
    (zeros) -> (N, T, H). A forward pass never lets padding (after the valid steps)
    reach a valid step."""
    out, _ = rnn(inputs, None if h0 is None else h0.unsqueeze(0).contiguous())
    return out


def step_gru(rnn: nn.Module, inputs: Tensor, h: Tensor) -> Tensor:
    """One step of a batch-first GRU: inputs (N, F), h (N, H) -> next state (N, H).
    A one-layer GRU steps as a GRU cell with its weights (torch.gru_cell: the same
    arithmetic, and in a loop of single steps about 1.7x cheaper than calling the
    GRU module on sequences of length one)."""
    if (isinstance(rnn, nn.GRU) and rnn.num_layers == 1 and rnn.bias
            and not rnn.bidirectional and not rnn.proj_size):
        return torch.gru_cell(inputs, h, rnn.weight_ih_l0, rnn.weight_hh_l0,
                              rnn.bias_ih_l0, rnn.bias_hh_l0)
    return run_gru(rnn, inputs.unsqueeze(1), h)[:, 0]


# direction -> (reads x_{1:t} forward, reads x_{t:T} backward)
DIRECTIONS: dict[str, tuple[bool, bool]] = {
    "forward": (True, False),         # step t sees steps 1..t
    "backward": (False, True),        # step t sees steps t..T (the sequence's own end)
    "bidirectional": (True, True),    # step t sees the whole sequence
}


class SequenceSummary(nn.Module):
    """GRU summary c_t of features (B, T, F) that sees the steps ``direction`` allows:
    forward: f_{1:t}; backward: f_{t:T}, run from each sequence's last valid step, so
    padding never reaches valid steps; bidirectional: both, concatenated [forward,
    backward]. ``out_features`` is the width C of c_t."""

    def __init__(self, feature_dim: int, hidden_size: int, direction: str) -> None:
        super().__init__()
        if direction not in DIRECTIONS:
            raise ConfigError(f"unknown direction {direction!r}; choose one of "
                              f"{sorted(DIRECTIONS)}")
        reads_forward, reads_backward = DIRECTIONS[direction]
        gru = lambda: nn.GRU(feature_dim, hidden_size, batch_first=True)
        self.forward_rnn = gru() if reads_forward else None
        self.backward_rnn = gru() if reads_backward else None
        self.direction, self.hidden_size = direction, hidden_size
        self.out_features = hidden_size * (reads_forward + reads_backward)

    def forward(self, features: Tensor, lengths: Tensor) -> Tensor:
        """features (B, T, F), lengths (B,) -> c (B, T, C)."""
        parts = []
        if self.forward_rnn is not None:
            parts.append(run_gru(self.forward_rnn, features))
        if self.backward_rnn is not None:
            reverse = run_gru(self.backward_rnn, reverse_padded(features, lengths))
            parts.append(reverse_padded(reverse, lengths))
        return parts[0] if len(parts) == 1 else torch.cat(parts, -1)
