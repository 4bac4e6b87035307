"""How ``sdeint`` makes its solution differentiable: strategy objects.

- ``Backprop()`` (default): autograd records every step; memory grows with the
  number of steps (the networks' activations of every step are kept).
- ``CheckpointedBlocks(steps)``: autograd keeps only the state at the start of each
  block of ``steps`` steps and recomputes a block's steps (with the same noise) when
  the backward pass reaches it: memory ~ N / steps states + one block's activations,
  about one extra forward pass of time; gradients identical to ``Backprop``.
- ``Adjoint()`` (``dynvae.sde.adjoint``): the stochastic adjoint, memory independent of
  the number of steps.

Each strategy's ``solve(run, z0, cost0)`` returns the states (S, B, Z) and
accumulated running costs (S, B, C) or None at the S recorded step indices of the
``StepRun``.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from dynvae.errors import ConfigError
from dynvae.sde.stepping import StepRun, integrate


class Gradients(abc.ABC):
    """A way of differentiating a fixed-step solve."""

    @abc.abstractmethod
    def solve(self, run: StepRun, z0: Tensor, cost0: Tensor | None
              ) -> tuple[Tensor, Tensor | None]:
        """z0 (B, Z), cost0 (B, C) or None -> states (S, B, Z), costs (S, B, C) or None."""


def _collect(run: StepRun, z0: Tensor, cost0: Tensor | None, start: int, stop: int
             ) -> tuple[list[Tensor], list[Tensor | None], Tensor, Tensor | None]:
    zs, costs = [], []

    def keep(i: int, z: Tensor, cost: Tensor | None) -> None:
        zs.append(z)
        costs.append(cost)
    z, cost = integrate(run, z0, cost0, start, stop, keep)
    return zs, costs, z, cost


def _stack(zs: list[Tensor], costs: list[Tensor | None]) -> tuple[Tensor, Tensor | None]:
    return torch.stack(zs), (None if costs[0] is None else torch.stack(costs))


@dataclass(frozen=True)
class Backprop(Gradients):
    """Backpropagation through every step."""

    def solve(self, run, z0, cost0):
        zs, costs, _, _ = _collect(run, z0, cost0, 0, run.n_steps)
        return _stack([z0, *zs], [cost0, *costs])


@dataclass(frozen=True)
class CheckpointedBlocks(Gradients):
    """Backpropagation with the steps of each block of ``steps`` recomputed in the
    backward pass (rounded up to a multiple of a compiled solver's block)."""

    steps: int = 64

    def __post_init__(self) -> None:
        if not isinstance(self.steps, int) or isinstance(self.steps, bool) or self.steps < 1:
            raise ConfigError(f"CheckpointedBlocks.steps must be a positive integer, got "
                              f"{self.steps!r}")

    def solve(self, run, z0, cost0):
        if not torch.is_grad_enabled():
            return Backprop().solve(run, z0, cost0)
        k = run.solver.steps_per_call
        block = -(-self.steps // k) * k
        zs, costs, z, cost = [z0], [cost0], z0, cost0
        for start in range(0, run.n_steps, block):
            stop = min(run.n_steps, start + block)
            rec_z, rec_c, z, cost = checkpoint(_collect, run, z, cost, start, stop,
                                               use_reentrant=False)
            zs += rec_z
            costs += rec_c
        return _stack(zs, costs)
