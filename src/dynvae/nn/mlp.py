"""Small feed-forward building blocks: MLP, hidden-feature trunks, Gaussian output heads."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn
from torch.nn.functional import softplus

from dynvae.errors import ConfigError


class MLP(nn.Module):
    """Multi-layer perceptron (…, in_features) -> (…, out_features) with ReLU hidden layers
    (or another ``activation`` module class, e.g. nn.Softplus for smooth SDE drifts).

    With no hidden layers it is one affine map, which is how the linear-Gaussian
    special case of the deep models is built.
    """

    def __init__(self, in_features: int, hidden_sizes: Sequence[int], out_features: int,
                 activate_output: bool = False,
                 activation: Callable[[], nn.Module] = nn.ReLU) -> None:
        super().__init__()
        sizes = [in_features, *hidden_sizes, out_features]
        if any(int(s) < 1 for s in sizes):
            raise ConfigError(f"MLP layer sizes must be positive integers, got {sizes}")
        layers: list[nn.Module] = []
        for i in range(len(sizes) - 1):
            layers.append(nn.Linear(sizes[i], sizes[i + 1]))
            if i < len(sizes) - 2 or activate_output:
                layers.append(activation())
        self.net = nn.Sequential(*layers)
        self.in_features, self.out_features = in_features, out_features

    def forward(self, h: Tensor) -> Tensor:
        return self.net(h)


def trunk(in_features: int, hidden_sizes: Sequence[int]) -> tuple[nn.Module, int]:
    """Hidden-feature network and its output width: an MLP whose last hidden layer is its
    (activated) output, or the identity when ``hidden_sizes`` is empty."""
    hidden_sizes = tuple(hidden_sizes)
    if not hidden_sizes:
        return nn.Identity(), in_features
    return MLP(in_features, hidden_sizes[:-1], hidden_sizes[-1], activate_output=True), \
        hidden_sizes[-1]


def inverse_softplus(v: Tensor) -> Tensor:
    """The raw value whose softplus is ``v`` (> 0)."""
    return v + torch.log(-torch.expm1(-v))


class FreeVariance(nn.Module):
    """A free (input-independent) raw variance parameter, broadcast over the batch axes."""

    def __init__(self, out_features: int) -> None:
        super().__init__()
        self.raw = nn.Parameter(torch.zeros(out_features))

    def forward(self, h: Tensor) -> Tensor:
        return self.raw.expand(*h.shape[:-1], self.raw.shape[0])


class GaussianHead(nn.Module):
    """(…, in_features) -> mean (…, out), variance (…, out) of a diagonal Gaussian.

    var = softplus(raw) + min_var: positive, floored away from zero. The raw variance
    is an affine function of the input, or one free parameter when ``free_variance``.
    """

    def __init__(self, in_features: int, out_features: int, min_var: float = 1e-4,
                 free_variance: bool = False) -> None:
        super().__init__()
        if min_var < 0:
            raise ConfigError(f"min_var must be >= 0, got {min_var}")
        self.mean = nn.Linear(in_features, out_features)
        self.variance = FreeVariance(out_features) if free_variance else nn.Linear(
            in_features, out_features)
        self.min_var = float(min_var)

    def forward(self, h: Tensor) -> tuple[Tensor, Tensor]:
        return self.mean(h), softplus(self.variance(h)) + self.min_var


class GaussianMLP(nn.Module):
    """(…, in_features) -> mean (…, out), variance (…, out) of a diagonal Gaussian: a
    hidden-feature trunk then a :class:`GaussianHead`. With no hidden layers the mean
    is affine in the input (the linear-Gaussian special case)."""

    def __init__(self, in_features: int, hidden_sizes: Sequence[int], out_features: int,
                 min_var: float = 1e-4, free_variance: bool = False) -> None:
        super().__init__()
        self.trunk, width = trunk(in_features, hidden_sizes)
        self.head = GaussianHead(width, out_features, min_var=min_var,
                                 free_variance=free_variance)

    def forward(self, h: Tensor) -> tuple[Tensor, Tensor]:
        return self.head(self.trunk(h))
