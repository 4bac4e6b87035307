"""The combiner of Krishnan et al. (2017), merging z_{t-1} with a sequence summary."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.nn.functional import linear, softplus

from dynvae.nn.loops import fused_head, per_step_rows
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

    def steps(self, context: Tensor, n_samples: int) -> Callable[[int, Tensor],
                                                                 tuple[Tensor, Tensor]]:
        """The factors q(z_t | z_{t-1}, context_t) of a whole sequence, for ancestral
        sampling: context (B, T, C) -> a map (t, z_prev (K B, Z)) -> mean, var (K B, Z),
        rows sample-major (row k B + b: sample k of sequence b), K = ``n_samples``.

        The same function as :meth:`forward`, arranged for a loop over T steps of small
        matrices, whose cost is the number of operations: the head is affine in h, so
        head(h_t) = 0.5 W tanh(W_z z_{t-1} + b_z) + (0.5 W context_t + b) and the
        context's share is one product for all steps outside the loop; the mean and
        variance rows of the head are one matrix (one product a step, not two); and 2-d
        rows need no reshaping around each product."""
        weight, bias = fused_head(self.head)                                   # (2Z, C)
        per_step = per_step_rows(linear(0.5 * context, weight, bias), n_samples)
        half_t = (0.5 * weight).t()
        w_z, b_z = self.latent_to_hidden.weight, self.latent_to_hidden.bias
        z_dim, min_var = self.head.mean.out_features, self.head.min_var

        def step(t: int, z_prev: Tensor) -> tuple[Tensor, Tensor]:
            out = torch.addmm(per_step[t], torch.tanh(linear(z_prev, w_z, b_z)), half_t)
            mean, raw = out.split(z_dim, -1)
            return mean, softplus(raw) + min_var
        return step
