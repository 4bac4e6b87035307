"""Observation models p(x_t | features) as strategy objects (seed eq. 17/22).

Each one maps decoder features (…, F) to its parameters, and gives the masked
log-probability of every entry, the predictive mean and variance, and samples.
"""

from __future__ import annotations

import abc

import torch
from torch import Tensor, nn
from torch.nn.functional import binary_cross_entropy_with_logits

from dynvae.errors import ConfigError, DataError
from dynvae.gaussian import diag_gaussian_log_prob
from dynvae.nn.mlp import GaussianHead


class ObservationModel(nn.Module, abc.ABC):
    """p(x | features), factorised over the D entries. Parameters are a tuple of
    (…, D) tensors returned by ``forward``."""

    def __init__(self, in_features: int, data_dim: int) -> None:
        super().__init__()
        self.in_features, self.data_dim = in_features, data_dim

    @abc.abstractmethod
    def forward(self, h: Tensor) -> tuple[Tensor, ...]:
        """Features (…, F) -> distribution parameters, each (…, D)."""

    @abc.abstractmethod
    def log_prob(self, x: Tensor, params: tuple[Tensor, ...], mask: Tensor) -> Tensor:
        """Elementwise log p(x | params) (…, D), exactly 0 where ``mask`` is False."""

    @abc.abstractmethod
    def moments(self, params: tuple[Tensor, ...]) -> tuple[Tensor, Tensor]:
        """Predictive mean (…, D) and variance (…, D)."""

    @abc.abstractmethod
    def sample(self, params: tuple[Tensor, ...]) -> Tensor:
        """One draw (…, D)."""

    def check_data(self, x: Tensor, mask: Tensor) -> None:
        """Raise DataError if the observed entries lie outside the support."""


class GaussianObservation(ObservationModel):
    """N(x | mu(h), diag sigma^2(h)); the variance may instead be one free parameter."""

    def __init__(self, in_features: int, data_dim: int, min_var: float = 1e-4,
                 free_variance: bool = False) -> None:
        super().__init__(in_features, data_dim)
        self.head = GaussianHead(in_features, data_dim, min_var=min_var,
                                 free_variance=free_variance)

    def forward(self, h: Tensor) -> tuple[Tensor, Tensor]:
        return self.head(h)

    def log_prob(self, x: Tensor, params: tuple[Tensor, ...], mask: Tensor) -> Tensor:
        mean, var = params
        return diag_gaussian_log_prob(x, mean, var, mask)

    def moments(self, params: tuple[Tensor, ...]) -> tuple[Tensor, Tensor]:
        return params[0], params[1]

    def sample(self, params: tuple[Tensor, ...]) -> Tensor:
        mean, var = params
        return mean + var.sqrt() * torch.randn_like(mean)


class BernoulliObservation(ObservationModel):
    """Bernoulli(x | sigmoid(logits(h))) for binary data in [0, 1] (piano rolls,
    binarised images); fractional values are allowed (continuous relaxation)."""

    def __init__(self, in_features: int, data_dim: int, min_var: float = 1e-4,
                 free_variance: bool = False) -> None:
        super().__init__(in_features, data_dim)
        if free_variance:
            raise ConfigError("free_emission_variance applies to the 'gaussian' observation "
                              "only; a Bernoulli variance is fixed by its mean")
        self.logits = nn.Linear(in_features, data_dim)

    def forward(self, h: Tensor) -> tuple[Tensor]:
        return (self.logits(h),)

    def log_prob(self, x: Tensor, params: tuple[Tensor, ...], mask: Tensor) -> Tensor:
        (logits,) = params
        x = x.expand_as(logits)
        lp = -binary_cross_entropy_with_logits(logits, x, reduction="none")
        return torch.where(mask, lp, torch.zeros_like(lp))

    def moments(self, params: tuple[Tensor, ...]) -> tuple[Tensor, Tensor]:
        p = torch.sigmoid(params[0])
        return p, p * (1 - p)

    def sample(self, params: tuple[Tensor, ...]) -> Tensor:
        return torch.bernoulli(torch.sigmoid(params[0]))

    def check_data(self, x: Tensor, mask: Tensor) -> None:
        obs = x[mask]
        if obs.numel() and (bool((obs < 0).any()) or bool((obs > 1).any())):
            raise DataError(f"the 'bernoulli' observation needs values in [0, 1]; observed "
                            f"values span [{float(obs.min())}, {float(obs.max())}]")


OBSERVATIONS: dict[str, type[ObservationModel]] = {
    "gaussian": GaussianObservation,
    "bernoulli": BernoulliObservation,
}
