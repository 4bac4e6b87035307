"""Encoders q(z_t | z_{t-1}, summary_t of x): the strategy the DKF uses for inference.

An encoder splits in two parts. ``summarise`` turns the observation features into a
deterministic per-step context (which part of x_{1:T} step t may see is what tells
the encoders apart: seed eq. 16/19 and the alternatives listed after it). ``step``
then gives the diagonal Gaussian q(z_t | z_{t-1}, context_t), called once per step
during ancestral sampling. ``initial_latent`` is the learned stand-in for z_{-1} at
the first step.
"""

from __future__ import annotations

import abc
from collections.abc import Callable

import torch
from torch import Tensor, nn

from dynvae.nn.combiner import Combiner
from dynvae.nn.loops import per_step_rows


def reverse_padded(x: Tensor, lengths: Tensor) -> Tensor:
    """Reverse each sequence of x (B, T, F) within its length; padding stays in place.

    This is its own inverse, and lets a forward RNN read x_{t:T} from each sequence's
    own last valid step, so padding never reaches valid steps.
    """
    T = x.shape[1]
    steps = torch.arange(T, device=x.device)
    idx = lengths[:, None].to(steps.device) - 1 - steps[None, :]       # (B, T)
    idx = torch.where(idx >= 0, idx, steps[None, :].expand_as(idx))
    return x.gather(1, idx[..., None].expand_as(x))


class Encoder(nn.Module, abc.ABC):
    """q(z_t | z_{t-1}, context_t) with context = summarise(features).

    reads_future: whether context_t depends on x after step t (then the features may
    fill unseen entries from later observations, ``observation_features(fill=...)``).
    context_dim: C, the width of context_t."""

    reads_future: bool = False
    context_dim: int

    def __init__(self, feature_dim: int, latent_dim: int) -> None:
        super().__init__()
        self.feature_dim, self.latent_dim = feature_dim, latent_dim
        self.z_start = nn.Parameter(torch.zeros(latent_dim))

    def initial_latent(self, shape: tuple[int, ...]) -> Tensor:
        """(*shape, Z) the learned value standing for z_{-1} at the first step."""
        return self.z_start.expand(*shape, self.latent_dim)

    @abc.abstractmethod
    def summarise(self, features: Tensor, lengths: Tensor) -> Tensor:
        """features (B, T, F), lengths (B,) -> context (B, T, C)."""

    @abc.abstractmethod
    def step(self, context: Tensor, z_prev: Tensor) -> tuple[Tensor, Tensor]:
        """context (…, C), z_prev (…, Z) -> mean (…, Z), var (…, Z) of q(z_t | ·)."""

    def steps(self, context: Tensor, n_samples: int) -> Callable[[int, Tensor],
                                                                 tuple[Tensor, Tensor]]:
        """:meth:`step` along a whole sequence: context (B, T, C) -> a map (t, z_prev
        (K B, Z)) -> mean, var (K B, Z), rows sample-major (row k B + b: sample k of
        sequence b), K = ``n_samples``. Encoders may precompute what does not depend on
        z_{t-1} here."""
        per_step = per_step_rows(context, n_samples)

        def step(t: int, z_prev: Tensor) -> tuple[Tensor, Tensor]:
            return self.step(per_step[t], z_prev)
        return step


class CombinerEncoder(Encoder):
    """Encoders whose step is the combiner of Krishnan et al. (2017)."""

    def __init__(self, feature_dim: int, latent_dim: int, context_dim: int,
                 min_var: float = 1e-4) -> None:
        super().__init__(feature_dim, latent_dim)
        self.context_dim = context_dim
        self.combiner = Combiner(latent_dim, context_dim, min_var=min_var)

    def step(self, context: Tensor, z_prev: Tensor) -> tuple[Tensor, Tensor]:
        return self.combiner(z_prev, context)

    def steps(self, context: Tensor, n_samples: int) -> Callable[[int, Tensor],
                                                                 tuple[Tensor, Tensor]]:
        return self.combiner.steps(context, n_samples)
