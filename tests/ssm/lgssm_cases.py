"""Random linear Gaussian SSMs shared by the Kalman tests."""

from __future__ import annotations

import torch

from dynvae.ssm import LinearGaussianSSM


def spd(n: int, g: torch.Generator, lead: tuple[int, ...] = (), dtype=torch.float64,
        floor: float = 0.2) -> torch.Tensor:
    L = torch.randn(*lead, n, n, generator=g, dtype=dtype) / n**0.5
    return L @ L.transpose(-1, -2) + floor * torch.eye(n, dtype=dtype)


def rich_model(T: int, S: int = 3, D: int = 2, U: int = 2, seed: int = 0,
               dtype=torch.float64, batch: tuple[int, ...] = ()) -> LinearGaussianSSM:
    """Time-varying A, Q, H, R, biases b, d and input gains B, D (all with a T axis)."""
    g = torch.Generator().manual_seed(seed)
    r = lambda *shape: torch.randn(*batch, *shape, generator=g, dtype=dtype)
    return LinearGaussianSSM(
        initial_mean=r(S), initial_cov=spd(S, g, batch, dtype, 1.0),
        transition_matrix=0.6 * r(T, S, S) / S**0.5, transition_cov=spd(S, g, (*batch, T), dtype),
        emission_matrix=r(T, D, S), emission_cov=spd(D, g, (*batch, T), dtype),
        transition_bias=r(T, S), emission_bias=r(T, D),
        transition_input=r(T, S, U), emission_input=r(T, D, U),
        time_varying={"transition_matrix", "transition_cov", "emission_matrix", "emission_cov",
                      "transition_bias", "emission_bias", "transition_input", "emission_input"})


def constant_model(S: int = 3, D: int = 2, seed: int = 0, dtype=torch.float64
                   ) -> LinearGaussianSSM:
    g = torch.Generator().manual_seed(seed)
    return LinearGaussianSSM(
        initial_mean=torch.randn(S, generator=g, dtype=dtype),
        initial_cov=spd(S, g, (), dtype, 1.0),
        transition_matrix=0.5 * torch.randn(S, S, generator=g, dtype=dtype),
        transition_cov=spd(S, g, (), dtype), emission_matrix=torch.randn(D, S, generator=g,
                                                                         dtype=dtype),
        emission_cov=spd(D, g, (), dtype))


def random_mask(shape, p_missing: float = 0.35, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=g) > p_missing


def pykalman_filter(model):
    """pykalman.KalmanFilter with the parameters of a time-invariant LinearGaussianSSM
    ``model``. pykalman's initial state is z_0, observed by x_0, as in dynvae."""
    import pykalman
    return pykalman.KalmanFilter(
        transition_matrices=model.transition_matrix.numpy(),
        observation_matrices=model.emission_matrix.numpy(),
        transition_covariance=model.transition_cov.numpy(),
        observation_covariance=model.emission_cov.numpy(),
        initial_state_mean=model.initial_mean.numpy(),
        initial_state_covariance=model.initial_cov.numpy())
