"""ODE-RNN (Rubanova, Chen & Duvenaud 2019, "Latent ODEs for irregularly-sampled time
series", Algorithm 1), run backwards in time as the latent ODE's encoder.

Between observations the hidden state follows a learned ODE dh/dt = f_h(h); at each
observation a GRU cell reads it. Running from each sequence's last valid time back to
its first, the state at t_0 has read the whole sequence, on that sequence's own times:
    h <- ODESolve(f_h, h, over the gap t_{k+1} - t_k),   h <- GRU([x_k * m_k, m_k], h)
for k = L-1, ..., 0 (h = 0 before the last observation; no gap before it). The field is
autonomous, so the direction of time is absorbed into f_h. Padding takes no step and
no update, and padded times and values never enter.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from dynvae.nn.encoders.base import reverse_padded
from dynvae.nn.mlp import MLP
from dynvae.ode import FixedStep, advance


class ODERNNEncoder(nn.Module):
    """Backward ODE-RNN: features (B, T, F), times (B, T), lengths (B,) -> h(t_0) (B, H),
    or with ``every_step`` the state after reading each x_k, which has read x_{k:L-1}:
    (B, T, H) (padding holds no meaning).

    field_hidden: hidden sizes of f_h (tanh). solver: a fixed-step ODE solver; dt its
    largest step (None: one step per gap).
    """

    def __init__(self, feature_dim: int, hidden_size: int, field_hidden: Sequence[int],
                 solver: FixedStep, dt: float | None = None) -> None:
        super().__init__()
        self.cell = nn.GRUCell(feature_dim, hidden_size)
        self.field = MLP(hidden_size, field_hidden, hidden_size, activation=nn.Tanh)
        self.solver, self.dt, self.hidden_size = solver, dt, hidden_size

    def forward(self, features: Tensor, t: Tensor, lengths: Tensor,
                every_step: bool = False) -> Tensor:
        B, T, _ = features.shape
        valid = torch.arange(T, device=t.device)[None] < lengths[:, None].to(t.device)
        t = torch.where(valid, t, torch.zeros_like(t))          # padded times never enter
        back_x = reverse_padded(features, lengths)                 # step j: x_{L-1-j}
        back_t = reverse_padded(t[..., None], lengths)[..., 0]     # (B, T), decreasing
        gap = torch.zeros_like(back_t)                             # gap[:, j]: t_{L-j} - t_{L-1-j}
        gap[:, 1:] = torch.where(valid[:, 1:], back_t[:, :-1] - back_t[:, 1:],
                                 torch.zeros_like(back_t[:, 1:]))
        field = lambda s, h: self.field(h)
        h = features.new_zeros(B, self.hidden_size)
        states = []
        for j in range(T):
            if j > 0:
                h = advance(field, h, -back_t[:, j - 1:j], gap[:, j:j + 1], self.solver,
                            self.dt)
            h = torch.where(valid[:, j:j + 1], self.cell(back_x[:, j], h), h)
            states.append(h)
        if not every_step:
            return h
        return reverse_padded(torch.stack(states, 1), lengths)                 # (B, T, H)
