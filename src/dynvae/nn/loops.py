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

from dynvae.nn.mlp import MLP, GaussianHead, GaussianMLP


def per_step_rows(v: Tensor, n_samples: int) -> tuple[Tensor, ...]:
    """v (B, T, …) -> T tensors (K B, …), rows sample-major (row k B + b: sample k of
    sequence b), K = ``n_samples``; unbound once (indexing [:, t] in a loop makes
    autograd allocate a full-size gradient per step)."""
    if n_samples > 1:
        v = v.expand(n_samples, *v.shape).flatten(0, 1)
    return v.unbind(1)


def input_share(weight: Tensor, bias: Tensor | None, columns: slice, inputs: Tensor,
                n_samples: int) -> tuple[Tensor, ...]:
    """The input's share W[:, columns] x_t + b of an affine map of a concatenation, for
    every step: inputs (B, T, X) -> T tensors (K B, out), see :func:`per_step_rows`. It
    is computed once per sequence, then repeated for the K samples."""
    return per_step_rows(linear(inputs, weight[:, columns], bias), n_samples)


def fused_head(head: GaussianHead) -> tuple[Tensor, Tensor]:
    """The mean and variance rows of a Gaussian head (input-dependent variance) as one
    affine map (2 Z, in)."""
    return (torch.cat([head.mean.weight, head.variance.weight]),
            torch.cat([head.mean.bias, head.variance.bias]))


def gaussian_mlp_steps(trunk: nn.Module, head: nn.Module, state_width: int,
                       inputs: Tensor, n_samples: int = 1, state_first: bool = True
                       ) -> Callable[[int, Tensor], tuple[Tensor, Tensor]]:
    """head(trunk([s_t; x_t])) along a loop (``state_first=False``: of [x_t; s_t]):
    inputs x (B, T, X) -> a map (t, s_t (K B, state_width)) -> mean, var (K B, Z), rows
    as :func:`per_step_rows`. Split as the module docstring says when ``trunk`` is
    nn.Identity or a dynvae.nn.mlp.MLP and ``head`` a GaussianHead with an
    input-dependent variance; other modules are applied to the concatenation."""
    if not (isinstance(head, GaussianHead) and isinstance(head.variance, nn.Linear)
            and isinstance(trunk, nn.Identity | MLP)):
        per_step = per_step_rows(inputs, n_samples)

        def generic(t: int, state: Tensor) -> tuple[Tensor, Tensor]:
            parts = [state, per_step[t]] if state_first else [per_step[t], state]
            return head(trunk(torch.cat(parts, -1)))
        return generic
    weight, bias = fused_head(head)
    z_dim, min_var = head.mean.out_features, head.min_var
    if isinstance(trunk, nn.Identity):
        first, rest = (weight, bias), None
    else:
        first, rest = (trunk.net[0].weight, trunk.net[0].bias), trunk.net[1:]
    X = inputs.shape[-1]
    state_cols, input_cols = ((slice(None, state_width), slice(state_width, None))
                              if state_first else (slice(X, None), slice(None, X)))
    share = input_share(*first, input_cols, inputs, n_samples)
    w_state = first[0][:, state_cols].t()

    def step(t: int, state: Tensor) -> tuple[Tensor, Tensor]:
        out = torch.addmm(share[t], state, w_state)
        if rest is not None:
            out = linear(rest(out), weight, bias)
        mean, raw = out.split(z_dim, -1)
        return mean, softplus(raw) + min_var
    return step


def gaussian_net_steps(net: nn.Module, state_width: int, inputs: Tensor, n_samples: int = 1,
                       state_first: bool = True
                       ) -> Callable[[int, Tensor], tuple[Tensor, Tensor]]:
    """:func:`gaussian_mlp_steps` of a GaussianMLP's trunk and head; any other module
    mapping the concatenation to (mean, var) is applied to it."""
    if isinstance(net, GaussianMLP):
        return gaussian_mlp_steps(net.trunk, net.head, state_width, inputs, n_samples,
                                  state_first)
    return gaussian_mlp_steps(nn.Identity(), net, state_width, inputs, n_samples,
                              state_first)


def gru_cell_steps(cell: nn.GRUCell, inputs: Tensor, n_samples: int = 1
                   ) -> Callable[[int, Tensor, Tensor], Tensor]:
    """cell([x_t; e_t], h) along a loop, x (B, T, X) known beforehand: a map (t, e_t
    (K B, E), h (K B, H)) -> the next state (K B, H), rows as :func:`per_step_rows`.
    PyTorch's GRU cell (gates r, z, n):
    r, z = sigmoid(W_i[r,z] [x; e] + b_i + W_h[r,z] h + b_h),
    n = tanh(W_in [x; e] + b_in + r (W_hn h + b_hn)), h' = (1 - z) n + z h."""
    X = inputs.shape[-1]
    share = input_share(cell.weight_ih, cell.bias_ih, slice(None, X), inputs, n_samples)
    w_extra = cell.weight_ih[:, X:].t()
    w_hh, b_hh = cell.weight_hh.t(), cell.bias_hh
    H = cell.hidden_size

    def step(t: int, extra: Tensor, h: Tensor) -> Tensor:
        gi = torch.addmm(share[t], extra, w_extra)                         # (N, 3H)
        gh = torch.addmm(b_hh, h, w_hh)
        r, z = torch.sigmoid(gi[:, :2 * H] + gh[:, :2 * H]).chunk(2, 1)
        n = torch.tanh(torch.addcmul(gi[:, 2 * H:], r, gh[:, 2 * H:]))
        return torch.addcmul(n, z, h - n)
    return step
