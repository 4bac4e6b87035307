"""Parametric prior mean functions of a state-space GP.

With a prior f ~ GP(m(t), k), the observations x = f + noise satisfy x - m(t) ~ GP(0, k) +
noise, so the Kalman filter on the residuals x - m(t) still gives the exact log marginal
likelihood in O(T), differentiable in the mean's parameters too (Rasmussen and Williams
2006, sec. 2.7). The mean is learned jointly with the kernel's hyperparameters. A stationary
kernel reverts to the prior mean far from the data, so the mean sets what extrapolation
tends to: a line keeps a trend going, a constant keeps the level of the data.

A basis mean is m(t) = sum_p w_p phi_p(t); it is initialised by least squares on the
observed entries. One mean object serves one output; StateSpaceGP copies it per output.
A new mean is one class plus one entry in ``MEANS``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import Tensor, nn

from dynvae.errors import ConfigError


class MeanFunction(nn.Module, ABC):
    """Prior mean m(t) of one GP output."""

    @abstractmethod
    def forward(self, t: Tensor) -> Tensor:
        """m(t) at times t (T,) -> (T,)."""

    def initialize(self, t: Tensor, y: Tensor) -> None:
        """Set the parameters from data: t (T,), y (T,) with NaN where missing."""

    def hyperparameters(self) -> dict[str, float]:
        """Flat name -> value of the parameters (and any reference time)."""
        return {}

    def rescaled(self, center: float, scale: float) -> dict[str, float]:
        """:meth:`hyperparameters` of the mean of center + scale * f, i.e. in the units of
        data that were standardised as (x - center) / scale before fitting."""
        return {}


class ZeroMean(MeanFunction):
    """m(t) = 0: the zero-mean GP, no parameters."""

    def forward(self, t: Tensor) -> Tensor:
        return torch.zeros_like(t)


class BasisMean(MeanFunction):
    """m(t) = Phi(t) w with a fixed basis Phi (T, P) whose first column is the constant 1.

    Subclasses give ``names`` (P,) and :meth:`basis`.
    """

    names: tuple[str, ...] = ()

    def __init__(self, *weights: float, dtype: torch.dtype = torch.float64) -> None:
        super().__init__()
        if len(weights) != len(self.names):
            raise ConfigError(f"{type(self).__name__} takes {len(self.names)} weights "
                            f"{self.names}, got {len(weights)}")
        self.weights = nn.Parameter(torch.tensor(weights, dtype=dtype))   # (P,)

    @abstractmethod
    def basis(self, t: Tensor) -> Tensor:
        """Phi(t): t (T,) -> (T, P)."""

    def forward(self, t: Tensor) -> Tensor:
        return self.basis(t) @ self.weights                                # (T,)

    def initialize(self, t: Tensor, y: Tensor) -> None:
        """Least squares fit of w to the observed entries of y (T,)."""
        keep = ~torch.isnan(y)
        with torch.no_grad():
            phi = self.basis(t[keep]).to(self.weights)                      # (T_obs, P)
            w = torch.linalg.lstsq(phi, y[keep].to(self.weights)[:, None]).solution[:, 0]
            self.weights.copy_(w)

    def _weights(self) -> dict[str, float]:
        return {name: float(w) for name, w in zip(self.names, self.weights.detach(),
                                                      strict=True)}

    def _extras(self) -> dict[str, float]:
        """Fixed quantities needed to read the weights (none by default)."""
        return {}

    def hyperparameters(self) -> dict[str, float]:
        return {**self._weights(), **self._extras()}

    def rescaled(self, center: float, scale: float) -> dict[str, float]:
        out = {name: scale * v for name, v in self._weights().items()}
        out[self.names[0]] += center              # the constant column absorbs the centre
        return {**out, **self._extras()}


class ConstantMean(BasisMean):
    """m(t) = constant: the GP reverts to a learned level."""

    names = ("constant",)

    def __init__(self, constant: float = 0.0, dtype: torch.dtype = torch.float64) -> None:
        super().__init__(constant, dtype=dtype)

    def basis(self, t: Tensor) -> Tensor:
        return torch.ones_like(t)[:, None]                                 # (T, 1)


class LinearMean(BasisMean):
    """m(t) = intercept + slope (t - t_ref): the GP follows a learned linear trend.

    ``t_ref`` (a buffer) is set to the mean observed time by :meth:`initialize`, so that
    intercept and slope are nearly uncorrelated whatever the time origin (t in years AD
    would otherwise make the intercept ~2000 slopes large).
    """

    names = ("intercept", "slope")

    def __init__(self, intercept: float = 0.0, slope: float = 0.0, t_ref: float = 0.0,
                 dtype: torch.dtype = torch.float64) -> None:
        super().__init__(intercept, slope, dtype=dtype)
        self.register_buffer("t_ref", torch.tensor(t_ref, dtype=dtype))

    def basis(self, t: Tensor) -> Tensor:
        return torch.stack([torch.ones_like(t), t - self.t_ref], -1)       # (T, 2)

    def initialize(self, t: Tensor, y: Tensor) -> None:
        with torch.no_grad():
            self.t_ref.copy_(t[~torch.isnan(y)].mean())
        super().initialize(t, y)

    def _extras(self) -> dict[str, float]:
        return {"t_ref": float(self.t_ref)}


MEANS: dict[str, type[MeanFunction]] = {
    "zero": ZeroMean,
    "constant": ConstantMean,
    "linear": LinearMean,
}
