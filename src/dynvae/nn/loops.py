"""Networks applied once per step of a sequential loop, arranged for that loop.

A loop over T steps of small matrices (sampling z_t given the state of step t-1) costs
the number of operations it runs, not their size. When a network reads the
concatenation [s_t, x_t] of a loop state s_t and an input x_t known for every step
beforehand, its first affine map splits as W [s; x] + b = W_s s + (W_x x + b): the
input's share is one product for all T steps outside the loop, and each step adds
W_s s_t to it in one ``addmm`` (no concatenation, a smaller product). The functions
here return the per-step maps; each gives what the module gives on the concatenation,
up to rounding (the sums are reassociated).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.nn.functional import linear, softplus

from dynvae.nn.mlp import MLP, GaussianHead


def input_share(weight: Tensor, bias: Tensor | None, state_width: int, inputs: Tensor
                ) -> tuple[tuple[Tensor, ...], Tensor]:
    """For y_t = W [s_t; x_t] + b with s_t the first ``state_width`` columns: the
    input's share W_x x_t + b of every step, inputs (N, T, X) -> T tensors (N, out)
    (unbound once: indexing [:, t] in the loop makes autograd allocate a full-size
    gradient per step), and W_s^T (state_width, out)."""
    share = linear(inputs, weight[:, state_width:], bias)
    return share.unbind(1), weight[:, :state_width].t()


def fused_head(head: GaussianHead) -> tuple[Tensor, Tensor]:
    """The mean and variance rows of a Gaussian head (input-dependent variance) as one
    affine map (2 Z, in)."""
    return (torch.cat([head.mean.weight, head.variance.weight]),
            torch.cat([head.mean.bias, head.variance.bias]))


def gaussian_mlp_steps(trunk: nn.Module, head: nn.Module, state_width: int,
                       inputs: Tensor) -> Callable[[int, Tensor], tuple[Tensor, Tensor]]:
    """head(trunk([s_t; x_t])) along a loop: inputs x (N, T, X) -> a map (t, s_t
    (N, state_width)) -> mean, var (N, Z). Split as the module docstring says when
    ``trunk`` is nn.Identity or a dynvae.nn.mlp.MLP and ``head`` a GaussianHead with an
    input-dependent variance; other modules are applied to the concatenation."""
    if not (isinstance(head, GaussianHead) and isinstance(head.variance, nn.Linear)
            and isinstance(trunk, nn.Identity | MLP)):
        per_step = inputs.unbind(1)
        return lambda t, state: head(trunk(torch.cat([state, per_step[t]], -1)))
    weight, bias = fused_head(head)
    z_dim, min_var = head.mean.out_features, head.min_var
    if isinstance(trunk, nn.Identity):
        first, rest = (weight, bias), None
    else:
        first, rest = (trunk.net[0].weight, trunk.net[0].bias), trunk.net[1:]
    share, w_state = input_share(*first, state_width, inputs)

    def step(t: int, state: Tensor) -> tuple[Tensor, Tensor]:
        out = torch.addmm(share[t], state, w_state)
        if rest is not None:
            out = linear(rest(out), weight, bias)
        mean, raw = out.split(z_dim, -1)
        return mean, softplus(raw) + min_var
    return step


def gru_cell_steps(cell: nn.GRUCell, inputs: Tensor) -> Callable[[int, Tensor, Tensor],
                                                                  Tensor]:
    """cell([x_t; e_t], h) along a loop, x (N, T, X) known beforehand: a map (t, e_t
    (N, E), h (N, H)) -> the next state (N, H). PyTorch's GRU cell (gates r, z, n):
    r, z = sigmoid(W_i[r,z] [x; e] + b_i + W_h[r,z] h + b_h),
    n = tanh(W_in [x; e] + b_in + r (W_hn h + b_hn)), h' = (1 - z) n + z h."""
    share = linear(inputs, cell.weight_ih[:, :inputs.shape[-1]], cell.bias_ih).unbind(1)
    w_extra = cell.weight_ih[:, inputs.shape[-1]:].t()
    w_hh, b_hh = cell.weight_hh.t(), cell.bias_hh
    H = cell.hidden_size

    def step(t: int, extra: Tensor, h: Tensor) -> Tensor:
        gi = torch.addmm(share[t], extra, w_extra)                         # (N, 3H)
        gh = torch.addmm(b_hh, h, w_hh)
        r, z = torch.sigmoid(gi[:, :2 * H] + gh[:, :2 * H]).chunk(2, 1)
        n = torch.tanh(torch.addcmul(gi[:, 2 * H:], r, gh[:, 2 * H:]))
        return torch.addcmul(n, z, h - n)
    return step
