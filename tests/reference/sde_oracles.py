"""Independent references for the SDE tests: closed-form solutions written with NumPy
from the textbook formulas, slope fitting, and an adapter that feeds one dynvae
Brownian path to torchsde so both libraries see identical increments."""

from __future__ import annotations

import numpy as np
import torch

from dynvae.sde import SDE, NoiseType


def gbm_exact(z0: np.ndarray, mu: float, sigma: float, t: float, w: np.ndarray) -> np.ndarray:
    """Ito GBM at time t from its Brownian value w = W(t) - W(0) (Oksendal, eq. 5.1.13)."""
    return z0 * np.exp((mu - 0.5 * sigma ** 2) * t + sigma * w)


def rational_additive_exact(z0: np.ndarray, b: float, t: float, w: np.ndarray) -> np.ndarray:
    """dX = (b - X)/(1 + t) dt + b/(1 + t) dW has X_t = (X_0 + b t + b W_t)/(1 + t)
    (a reducible linear SDE: apply Ito's lemma to (1 + t) X_t)."""
    return (z0 + b * t + b * w) / (1.0 + t)


class RationalAdditive(SDE):
    """The linear additive-noise SDE above (diffusion depends on t only)."""

    noise = NoiseType.ADDITIVE

    def __init__(self, b: float = 1.0):
        self.b = b

    def drift(self, t, z):
        return (self.b - z) / (1 + t)

    def diffusion(self, t, z):
        return (self.b / (1 + t) * torch.ones_like(z)).unsqueeze(-1)


class SineDrift(SDE):
    """dX = -sin(X) dt + sigma dW: nonlinear drift, additive noise (no closed form)."""

    noise = NoiseType.ADDITIVE

    def __init__(self, sigma: float = 2.0):
        self.sigma = sigma

    def drift(self, t, z):
        return -torch.sin(z)

    def diffusion(self, t, z):
        return (self.sigma * torch.ones_like(z)).unsqueeze(-1)


def fitted_slope(dts, errors) -> float:
    """Least-squares slope of log(error) against log(dt)."""
    return float(np.polyfit(np.log(np.asarray(dts)), np.log(np.asarray(errors)), 1)[0])


def torchsde_brownian(path):
    """A torchsde Brownian motion answering every query from a dynvae BrownianPath."""
    import torchsde

    class _Adapter(torchsde.BaseBrownian):
        def __init__(self):
            super().__init__()

        def __call__(self, ta, tb=None, return_U=False, return_A=False):
            return path(float(ta), float(tb))

        def __repr__(self):
            return "dynvae-path"

        dtype = property(lambda self: path.dtype)
        device = property(lambda self: path.device)
        shape = property(lambda self: torch.Size(path.shape))
        levy_area_approximation = property(lambda self: "none")

    return _Adapter()
