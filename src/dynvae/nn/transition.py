"""Latent dynamics of the Deep Kalman Filter: initial priors p(z_0) and transitions
p(z_t | z_{t-1}, u_t) (seed eq. 18/23), as interchangeable strategy objects."""

from __future__ import annotations

import abc
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.nn.functional import softplus

from dynvae.nn.mlp import MLP, FreeVariance, GaussianHead, trunk


def with_input(z: Tensor, u: Tensor | None) -> Tensor:
    """Concatenate z (…, Z) and optional inputs u (…, U) -> (…, Z+U)."""
    return z if u is None else torch.cat([z, u.expand(*z.shape[:-1], u.shape[-1])], -1)


class InitialPrior(nn.Module, abc.ABC):
    """p(z_0): a diagonal Gaussian independent of the data."""

    def __init__(self, latent_dim: int) -> None:
        super().__init__()
        self.latent_dim = latent_dim

    @abc.abstractmethod
    def forward(self, shape: Sequence[int], like: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and variance of shape (*shape, Z), on the dtype/device of ``like``."""


class StandardNormalPrior(InitialPrior):
    """p(z_0) = N(0, I)."""

    def forward(self, shape: Sequence[int], like: Tensor) -> tuple[Tensor, Tensor]:
        mean = like.new_zeros((*shape, self.latent_dim))
        return mean, torch.ones_like(mean)


class LearnedGaussianPrior(InitialPrior):
    """p(z_0) = N(m_0, diag v_0) with learned m_0 and v_0 = softplus(raw) (init N(0, I))."""

    def __init__(self, latent_dim: int) -> None:
        super().__init__(latent_dim)
        self.mean = nn.Parameter(torch.zeros(latent_dim))
        self.raw_var = nn.Parameter(torch.full((latent_dim,), 0.5413248546129181))  # sp^-1(1)

    def forward(self, shape: Sequence[int], like: Tensor) -> tuple[Tensor, Tensor]:
        full = (*shape, self.latent_dim)
        return self.mean.expand(full), softplus(self.raw_var).expand(full)


class Transition(nn.Module, abc.ABC):
    """p(z_t | z_{t-1}, u_t) = N(mean, diag var)."""

    @abc.abstractmethod
    def forward(self, z_prev: Tensor, u: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """z_prev (…, Z), optional u (…, U) -> mean (…, Z), var (…, Z)."""


class GaussianMLPTransition(Transition):
    """Mean and variance from an MLP of [z_{t-1}, u_t] (seed eq. 18). With no hidden
    layers and a free variance it is the linear-Gaussian transition A z + B u + b."""

    def __init__(self, latent_dim: int, input_dim: int = 0, hidden_sizes: Sequence[int] = (64,),
                 min_var: float = 1e-4, free_variance: bool = False) -> None:
        super().__init__()
        self.trunk, width = trunk(latent_dim + input_dim, hidden_sizes)
        self.head = GaussianHead(width, latent_dim, min_var=min_var, free_variance=free_variance)

    def forward(self, z_prev: Tensor, u: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self.head(self.trunk(with_input(z_prev, u)))


class GatedTransition(Transition):
    """Gated transition of Krishnan et al. (2017), with inputs appended to z_{t-1}:
    g = sigmoid(MLP_g(z)), h = MLP_h(z), mean = (1 - g) * (W z + b) + g * h,
    var = softplus(W_s relu(h) + b_s) + min_var. W starts at the identity, so the
    model starts near a random walk."""

    def __init__(self, latent_dim: int, input_dim: int = 0, hidden_sizes: Sequence[int] = (64,),
                 min_var: float = 1e-4, free_variance: bool = False) -> None:
        super().__init__()
        n_in = latent_dim + input_dim
        self.gate = MLP(n_in, hidden_sizes, latent_dim)
        self.proposal = MLP(n_in, hidden_sizes, latent_dim)
        self.linear = nn.Linear(n_in, latent_dim)
        with torch.no_grad():
            self.linear.weight.zero_()
            self.linear.weight[:, :latent_dim].copy_(torch.eye(latent_dim))
            self.linear.bias.zero_()
        self.variance = FreeVariance(latent_dim) if free_variance else nn.Linear(
            latent_dim, latent_dim)
        self.min_var = float(min_var)

    def forward(self, z_prev: Tensor, u: Tensor | None = None) -> tuple[Tensor, Tensor]:
        zu = with_input(z_prev, u)                                  # (…, Z+U)
        g = torch.sigmoid(self.gate(zu))
        h = self.proposal(zu)
        mean = (1 - g) * self.linear(zu) + g * h
        return mean, softplus(self.variance(torch.relu(h))) + self.min_var


INITIAL_PRIORS: dict[str, type[InitialPrior]] = {
    "standard": StandardNormalPrior,
    "learned": LearnedGaussianPrior,
}

TRANSITIONS: dict[str, type[Transition]] = {
    "mlp": GaussianMLPTransition,
    "gated": GatedTransition,
}
