"""Synthetic sequences with a known generating model, for tests and examples."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from dynvae.data.dataset import SequenceDataset
from dynvae.data.io import from_numpy
from dynvae.errors import ConfigError, DataError
from dynvae.gaussian import batched_mv, psd_sqrt
from dynvae.ssm.model import _EVENT_DIMS, LinearGaussianSSM


def sample_lgssm(model: LinearGaussianSSM, n: int, T: int,
                 generator: torch.Generator | None = None,
                 u: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Exact ancestral samples of states and observations of a linear Gaussian SSM.

    z_0 ~ N(m0, P0); z_t = A_t z_{t-1} + c_t + w_t; x_t = H_t z_t + e_t + v_t, where the
    offsets c_t = B_t u_t + b_t and e_t = D_t u_t + d_t come from ``model.offsets``.

    Args:
        model: parameters (leading batch dims, if any, must broadcast against (n,)).
        n: number of sequences.  T: number of steps.
        generator: torch generator on the model's device, for reproducibility.
        u: optional (n, T, U) or (T, U) inputs, needed when the model has input gains.
    Returns:
        states (n, T, S) and observations (n, T, D) in the model's dtype and device.
    """
    if n < 1 or T < 1:
        raise ConfigError(f"n and T must be >= 1, got n={n}, T={T}")
    for name in model.time_varying:
        value = getattr(model, name)
        steps = value.shape[value.ndim - _EVENT_DIMS[name] - 1]
        if steps != T:
            raise DataError(f"time-varying {name} has {steps} steps, asked for T={T}")
    m0 = model.initial_mean
    if u is not None:
        u = torch.as_tensor(u, dtype=m0.dtype, device=m0.device)
        if u.ndim == 2:
            u = u.expand(n, *u.shape)
        if u.ndim != 3 or u.shape[:2] != (n, T):
            raise DataError(f"u must have shape (n, T, U) or (T, U) with n, T = {(n, T)}, "
                            f"got {tuple(u.shape)}")
    trans_off, emis_off = model.offsets(T, u)                  # (…, T, S), (…, T, D)
    S, D = model.state_dim, model.obs_dim

    def noise(dim: int) -> Tensor:
        return torch.randn((n, dim), generator=generator, dtype=m0.dtype, device=m0.device)

    z = m0 + batched_mv(psd_sqrt(model.initial_cov), noise(S))          # (n, S)
    states, observations = [], []
    for t in range(T):
        if t > 0:
            z = batched_mv(model.param_at("transition_matrix", t), z) + batched_mv(
                psd_sqrt(model.param_at("transition_cov", t)), noise(S))
            if trans_off is not None:
                z = z + trans_off[..., t, :]
        x = batched_mv(model.param_at("emission_matrix", t), z) + batched_mv(
            psd_sqrt(model.param_at("emission_cov", t)), noise(D))      # (n, D)
        if emis_off is not None:
            x = x + emis_off[..., t, :]
        states.append(z.expand(n, S))
        observations.append(x.expand(n, D))
    return torch.stack(states, dim=1), torch.stack(observations, dim=1)   # (n, T, S), (n, T, D)


def random_stable_lgssm(S: int, D: int, seed: int,
                        dtype: torch.dtype = torch.float64) -> LinearGaussianSSM:
    """A random time-invariant LGSSM whose transition has spectral radius in [0.6, 0.9].

    Noise covariances are random, well conditioned (eigenvalues >= 0.05); z_0 ~ N(m0, I).
    """
    if S < 1 or D < 1:
        raise ConfigError(f"S and D must be >= 1, got S={S}, D={D}")
    g = torch.Generator().manual_seed(seed)
    randn = lambda *shape: torch.randn(*shape, generator=g, dtype=torch.float64)
    A = randn(S, S)
    radius = 0.6 + 0.3 * torch.rand((), generator=g, dtype=torch.float64)
    A = A * (radius / torch.linalg.eigvals(A).abs().max())
    Lq, Lr = randn(S, S), randn(D, D)
    model = LinearGaussianSSM(
        initial_mean=randn(S),
        initial_cov=torch.eye(S, dtype=torch.float64),
        transition_matrix=A,
        transition_cov=0.1 * Lq @ Lq.T / S + 0.05 * torch.eye(S, dtype=torch.float64),
        emission_matrix=randn(D, S),
        emission_cov=0.1 * Lr @ Lr.T / D + 0.05 * torch.eye(D, dtype=torch.float64),
    )
    return model.to(dtype=dtype)


@dataclass(frozen=True)
class SyntheticLGSSM:
    """A sampled dataset with its generating model.

    dataset: observations with NaN at the hidden entries, times 0..T-1.
    model: the true :class:`LinearGaussianSSM` (float64).
    states: (n, T, S) true latent states.  complete: (n, T, D) observations before
    hiding entries.
    """

    dataset: SequenceDataset
    model: LinearGaussianSSM
    states: Tensor
    complete: Tensor


def synthetic_lgssm(n: int = 64, T: int = 100, S: int = 2, D: int = 3, missing: float = 0.1,
                    seed: int = 0) -> SyntheticLGSSM:
    """Sample ``n`` sequences from :func:`random_stable_lgssm` ``(S, D, seed)`` and hide
    each entry independently with probability ``missing``.

    A sequence left with no observed entry gets one random entry revealed, so every
    sequence is usable (only likely for tiny T*D and ``missing`` near 1).
    """
    if not 0.0 <= missing < 1.0:
        raise ConfigError(f"missing must lie in [0, 1), got {missing}")
    model = random_stable_lgssm(S, D, seed)
    g = torch.Generator().manual_seed(seed + 1)
    states, complete = sample_lgssm(model, n, T, generator=g)
    hidden = torch.rand(complete.shape, generator=g, dtype=torch.float64) < missing  # (n, T, D)
    empty = hidden.flatten(1).all(dim=1).nonzero().flatten()
    for b in empty.tolist():
        k = int(torch.randint(T * D, (), generator=g))
        hidden[b].view(-1)[k] = False
    x = complete.masked_fill(hidden, float("nan"))
    dataset = from_numpy(x.numpy(), t=torch.arange(T, dtype=torch.float64).numpy())
    return SyntheticLGSSM(dataset, model, states, complete)


def synthetic_lgssm_dataset(n: int = 64, T: int = 100, S: int = 2, D: int = 3,
                            missing: float = 0.1, seed: int = 0) -> SequenceDataset:
    """The dataset of :func:`synthetic_lgssm` (use that function to get the true model)."""
    return synthetic_lgssm(n, T, S, D, missing, seed).dataset


def stochastic_lorenz(n: int = 64, n_times: int = 100, t_end: float = 2.0,
                      noise_std: float = 0.01, drop: float = 0.0, missing: float = 0.0,
                      seed: int = 0) -> SequenceDataset:
    """Noisy observations of the stochastic Lorenz system (Li et al. 2020, sec. 9.9).

    Paths of ``dynvae.sde.processes.StochasticLorenz`` (drift a = (10, 28, 8/3),
    multiplicative diagonal noise b = (0.1, 0.28, 0.3), z_0 ~ N(0, I)) are solved with
    the Milstein scheme at step 1e-3 and read at ``n_times`` equally spaced times on
    [0, t_end], plus N(0, noise_std^2) observation noise. ``drop``: share of the time
    points removed at random from each sequence (irregular grids of varying lengths;
    the first one is kept). ``missing``: share of the remaining entries hidden (NaN).
    """
    import numpy as np

    from dynvae.data.dataset import Sequence
    from dynvae.sde.processes import stochastic_lorenz_dataset

    if n < 1 or n_times < 2 or not t_end > 0 or noise_std < 0:
        raise ConfigError(f"stochastic-lorenz needs n >= 1, n_times >= 2, t_end > 0 and "
                          f"noise_std >= 0, got {n}, {n_times}, {t_end}, {noise_std}")
    for name, share in (("drop", drop), ("missing", missing)):
        if not 0.0 <= share < 1.0:
            raise ConfigError(f"{name} must lie in [0, 1), got {share}")
    t, z = stochastic_lorenz_dataset(n, seed, n_times=n_times, t_end=t_end,
                                     dtype=torch.float64)
    rng = np.random.default_rng(seed + 1)
    x = z.numpy() + noise_std * rng.standard_normal(z.shape)               # (n, T, 3)
    x[rng.random(x.shape) < missing] = np.nan
    sequences = []
    for i in range(n):
        keep = rng.random(n_times) >= drop
        keep[0] = True
        xi = x[i, keep]
        if np.isnan(xi).all():
            xi[0, 0] = z[i, 0, 0].item()
        sequences.append(Sequence(t.numpy()[keep], xi, id=str(i)))
    return SequenceDataset(sequences, ["x", "y", "z"])
