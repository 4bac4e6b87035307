"""Configuration of the LGSSM: the Config dataclass, the tables of parameter blocks, the
Kalman inference back ends and the grouping of steps that share a transition."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

from dynvae.errors import ConfigError
from dynvae.models.common import DictConfig
from dynvae.models.lgssm_params import (
    DiffuseInitial,
    FixedMatrix,
    LearnedInitial,
    LearnedMatrix,
    MatrixBlock,
)
from dynvae.ssm import (
    FilterResult,
    SmootherResult,
    kalman_filter,
    parallel_kalman_filter,
    parallel_rts_smoother,
    rts_smoother,
)
from dynvae.ssm.native import (
    native_available,
    native_kalman_filter,
    native_rts_smoother,
    with_autograd_fallback,
)

DTYPES = {"float64": torch.float64, "float32": torch.float32}


@dataclass(frozen=True)
class Inference:
    """A Kalman filter and RTS smoother pair with the signatures of dynvae.ssm's."""

    filter: Callable[..., FilterResult]
    smoother: Callable[..., SmootherResult]


# sequential: O(T) steps; parallel: associative scans, O(log T) depth (long sequences)
INFERENCE = {"sequential": Inference(kalman_filter, rts_smoother),
             "parallel": Inference(parallel_kalman_filter, parallel_rts_smoother),
             # C back end (dynvae.ssm.native) where no gradient is needed (EM, reconstruct,
             # forecast, scoring under no_grad); the parallel scan where one is
             "native": Inference(
                 with_autograd_fallback(native_kalman_filter, parallel_kalman_filter),
                 with_autograd_fallback(native_rts_smoother, parallel_rts_smoother))}


def auto_inference() -> Inference:
    """The native back end where it compiles, else the parallel scan (for values); the
    parallel scan wherever autograd needs a differentiable pass."""
    return INFERENCE["native"] if native_available() else INFERENCE["parallel"]


class StepGroups(NamedTuple):
    """Which transition each step uses. index: (B, T) long group of step t (entry 0 and
    padding unused) or None for one shared transition; steps: (K,) the time step of each
    group (continuous time) or None."""

    index: Tensor | None
    steps: Tensor | None

    @property
    def count(self) -> int:
        return 1 if self.steps is None else int(self.steps.shape[0])


@dataclass
class Config(DictConfig):
    """LGSSM structure.

    state_dim: S; None means the data dimension D.
    transition: "random_walk" (A = I, fixed) or "linear" (A learned).
    emission: "identity" (H = I, fixed; needs S = D) or "linear" (H learned).
    initial: "diffuse" (z_0 ~ N(0, kappa I), first observed step(s) not scored, as
        statsmodels' approximate diffuse default) or "learned" (m0, P0 learned).
    diagonal_cov: Q, R (and a learned P0) diagonal instead of full.
    transition_bias, emission_bias: learn b, d.
    inputs: when the data has inputs u, learn B and D (u enters transition and emission).
    diffuse_kappa, diffuse_burn: variance of the diffuse state; observed steps left out.
    dtype: "float64" or "float32".
    inference: "auto" (the default: "native" where a C compiler is found, else
        "parallel"), "parallel" (associative-scan Kalman filter and RTS smoother),
        "sequential", or "native" (the compiled C filter/smoother of dynvae.ssm.native
        for every call that needs no gradient: EM, Fisher-gradient fitting,
        reconstruct, forecast; a pass that autograd differentiates uses the parallel
        scan).
    time: "discrete" (step t is the t-th row), "continuous" (dz = F z dt + L dW between
        the time stamps: dynvae.models.ct_lgssm), or "auto": `dynvae train` measures
        the irregularity of the training times and picks "continuous" for irregular
        data, "discrete" otherwise; a model built directly with "auto" is discrete.
    The default (random walk, identity emission, diffuse start) is the local level
    model, one level per channel.
    """

    state_dim: int | None = None
    transition: str = "random_walk"
    emission: str = "identity"
    initial: str = "diffuse"
    diagonal_cov: bool = False
    transition_bias: bool = False
    emission_bias: bool = False
    inputs: bool = True
    diffuse_kappa: float = 1e6
    diffuse_burn: int = 1
    dtype: str = "float64"
    inference: str = "auto"
    time: str = "auto"


def _identity(rows: int, cols: int, dtype) -> MatrixBlock:
    if rows != cols:
        raise ConfigError(f"emission 'identity' needs state_dim == data dim, got S={cols}, "
                          f"D={rows}; use emission='linear'")
    return FixedMatrix(torch.eye(rows, dtype=dtype))


TRANSITIONS = {
    "random_walk": lambda S, dtype: FixedMatrix(torch.eye(S, dtype=dtype)),
    "linear": lambda S, dtype: LearnedMatrix(0.9 * torch.eye(S, dtype=dtype)),
}
EMISSIONS = {
    "identity": _identity,
    "linear": lambda D, S, dtype: LearnedMatrix(torch.randn(D, S, dtype=dtype) / math.sqrt(S)),
}
INITIALS = {
    "diffuse": lambda S, c, dtype: DiffuseInitial(S, c.diffuse_kappa, c.diffuse_burn, dtype),
    "learned": lambda S, c, dtype: LearnedInitial(S, c.diagonal_cov, dtype),
}


TIMES = {"auto": "discrete", "discrete": "discrete", "continuous": "continuous"}


def choose(table: dict, key: str, what: str):
    if key not in table:
        raise ConfigError(f"unknown {what} {key!r}; choose one of {sorted(table)}")
    return table[key]
