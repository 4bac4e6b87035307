"""Inverse autoregressive flow (Kingma et al. 2016) on a diagonal-Gaussian draw.

Each step is a masked autoregressive network (MADE, Germain et al. 2015) over z with
one hidden layer, conditioned on a context h, giving a shift m and a gate s per
dimension; the update is the numerically stable one of Kingma et al. (2016, eq. 13-14):

    [m, s] = AR(z, h),   sigma = sigmoid(s),   z' = sigma * z + (1 - sigma) * m.

m_i and s_i depend on z_j only for j before i in the step's order, so dz'/dz is
triangular with diagonal sigma and log |det dz'/dz| = sum_i log sigma_i (eq. 10-11).
Successive steps alternate the order (forward, reversed, ...), so that after two steps
every dimension can depend on every other one.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from dynvae.errors import ConfigError

GATE_BIAS = 2.0   # initial s: sigma = 0.88, each step starts near the identity (Kingma et al.
#                   2016, Sec. 4: "+1 or +2")


def made_masks(order: Tensor, hidden: int) -> tuple[Tensor, Tensor]:
    """Connectivity of a one-hidden-layer MADE with autoregressive ``order``.

    order: (Z,) the position 1..Z of each dimension in the order. Hidden unit k has
    degree k mod Z in 0..Z-1 (degree-0 units see the context only). Returns
    in_mask (H, Z), True where unit k sees z_j (order_j <= degree_k), and out_mask
    (Z, H), True where output i sees unit k (degree_k < order_i): output i depends on
    z_j only through units with order_j <= degree_k < order_i, i.e. order_j < order_i.
    """
    degree = torch.arange(hidden) % order.numel()                      # (H,)
    return order[None, :] <= degree[:, None], degree[None, :] < order[:, None]


class IAFStep(nn.Module):
    """The masked weights of one IAF step; reverse: the order Z, ..., 1 instead of 1, ..., Z.

    The context enters through the flow's ``condition`` map (one affine map for all steps).
    """

    def __init__(self, latent_dim: int, hidden: int, reverse: bool) -> None:
        super().__init__()
        order = torch.arange(1, latent_dim + 1)
        in_mask, out_mask = made_masks(order.flip(0) if reverse else order, hidden)
        self.register_buffer("in_mask", in_mask, persistent=False)             # (H, Z)
        self.register_buffer("out_mask", out_mask.repeat(2, 1), persistent=False)  # (2Z, H)
        self.from_latent = nn.Linear(latent_dim, hidden, bias=False)
        self.out = nn.Linear(hidden, 2 * latent_dim)                           # [m, s]
        with torch.no_grad():
            self.out.bias[latent_dim:].fill_(GATE_BIAS)

    def masked_weights(self) -> tuple[Tensor, Tensor, Tensor]:
        """(H, Z) input weights, (2Z, H) output weights, (2Z,) output bias."""
        return self.from_latent.weight * self.in_mask, self.out.weight * self.out_mask, \
            self.out.bias


class InverseAutoregressiveFlow(nn.Module):
    """``n_steps`` IAF steps with alternating orders, all conditioned on the same h (…, C)
    through ``condition``, an affine map to each step's share of the hidden
    pre-activations, c = A h + a (…, n_steps H).

    forward: z (…, Z), h (…, C) -> z (…, Z) transformed, log |det dz_out/dz_in| (…).
    """

    def __init__(self, latent_dim: int, context_dim: int, n_steps: int, hidden: int) -> None:
        super().__init__()
        if n_steps < 1 or hidden < 1:
            raise ConfigError(f"an inverse autoregressive flow needs n_steps >= 1 and "
                              f"hidden >= 1, got {n_steps} and {hidden}")
        self.condition = nn.Linear(context_dim, n_steps * hidden)
        self.steps = nn.ModuleList(IAFStep(latent_dim, hidden, bool(k % 2))
                                   for k in range(n_steps))

    def forward(self, z: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
        return self.transform(z, self.condition(h), self.masked_weights())

    def masked_weights(self) -> list[tuple[Tensor, Tensor, Tensor]]:
        """Each step's masked weights, computed once for many calls of ``transform``."""
        return [step.masked_weights() for step in self.steps]

    @staticmethod
    def transform(z: Tensor, conditioning: Tensor, weights: list[tuple[Tensor, Tensor, Tensor]]
                  ) -> tuple[Tensor, Tensor]:
        """z (…, Z), conditioning = condition(h) (…, n_steps H), ``masked_weights()`` ->
        z (…, Z) transformed and log |det dz_out/dz_in| (…)."""
        log_gates = 0
        for c, (w_in, w_out, b_out) in zip(conditioning.chunk(len(weights), -1), weights,
                                             strict=True):
            a = F.elu(F.linear(z, w_in) + c)                                   # (…, H)
            m, s = F.linear(a, w_out, b_out).chunk(2, -1)                      # (…, Z) each
            z = torch.lerp(m, z, torch.sigmoid(s))   # sigma z + (1 - sigma) m, eq. 14
            log_gates = log_gates + F.logsigmoid(s)                            # (…, Z)
        return z, log_gates.sum(-1)
