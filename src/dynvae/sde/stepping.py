"""One fixed-step solve laid out step by step, for the gradient strategies to drive.

``StepRun`` holds what every step needs (the solver, the SDE, the step times and
sizes, the noise source) and which step indices are recorded (those ending on some
sequence's observation time). ``integrate`` advances a state over a range of steps
and hands the recorded states to a callback; the strategies in
``dynvae.sde.gradients`` and ``dynvae.sde.adjoint`` call it with or without a graph,
in checkpointed blocks, or step by step in reverse.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import Tensor

from dynvae.sde.noise import StepNoise
from dynvae.sde.sde import SDE
from dynvae.sde.solvers import Solver
from dynvae.sde.solvers.base import DriftCost

# on_record(step index, z (B, Z), accumulated cost (B, C) or None)
OnRecord = Callable[[int, Tensor, Tensor | None], None]


@dataclass
class StepRun:
    """A solve of N steps. times: (R, N + 1) step times (R = 1 shared grid, R = B per
    sequence); recorded: sorted step indices whose states are returned (0 included);
    cost_width: C, the width of the running cost, or None without one."""

    solver: Solver
    sde: SDE
    drift_cost: DriftCost
    times: Tensor
    noise: StepNoise
    recorded: list[int]
    cost_width: int | None

    def __post_init__(self) -> None:
        self.shared = self.times.shape[0] == 1
        self.n_steps = int(self.times.shape[-1]) - 1
        self.hs = self.times.diff(dim=-1)                                    # (R, N)
        # shared grid: step sizes as Python floats, as solvers take them
        self.h_floats = self.hs[0].tolist() if self.shared else None
        self.record_set = set(self.recorded)

    def time(self, i: int) -> Tensor:
        """Time of step index i: 0-dim (shared grid) or (B, 1)."""
        return self.times[0, i] if self.shared else self.times[:, i:i + 1]

    def size(self, i: int) -> float | Tensor:
        """Size of step i: a float (shared grid) or (B, 1)."""
        return self.h_floats[i] if self.shared else self.hs[:, i:i + 1]

    def step(self, i: int, z: Tensor, dW: Tensor, H: Tensor | None,
             solver: Solver | None = None) -> tuple[Tensor, Tensor | None]:
        """Step i from z (B, Z) with its noise dW, H (B, W): (z1, cost increment or None)."""
        solver = self.solver if solver is None else solver
        return solver.step(self.sde, self.drift_cost, self.time(i), self.time(i + 1),
                           self.size(i), z, dW, H)


def integrate(run: StepRun, z: Tensor, cost: Tensor | None, start: int, stop: int,
              on_record: OnRecord) -> tuple[Tensor, Tensor | None]:
    """Advance z (B, Z) and the accumulated cost (B, C) or None from step index start to
    stop, calling on_record at every recorded index in (start, stop]. Returns both at
    stop. Solvers with ``steps_per_call > 1`` take their steps in calls of that many."""
    k = run.solver.steps_per_call
    i = start
    while i < stop:
        n = min(stop - i, k if k > 1 else run.noise.chunk)
        dW, H = run.noise.block(i, i + n)
        if k > 1:
            z, cost = _advance(run, z, cost, i, dW, H, on_record)
        else:
            for j in range(n):
                z, dc = run.step(i + j, z, dW[j], None if H is None else H[j])
                if dc is not None:
                    cost = dc if cost is None else cost + dc
                if i + j + 1 in run.record_set:
                    on_record(i + j + 1, z, cost)
        i += n
    return z, cost


def _advance(run: StepRun, z: Tensor, cost: Tensor | None, i: int, dW: Tensor,
             H: Tensor | None, on_record: OnRecord) -> tuple[Tensor, Tensor | None]:
    """One ``Solver.advance`` call over the steps of dW (n, B, W) from index i."""
    n = dW.shape[0]
    shared = run.times.shape[0] == 1
    ts = run.times[0, i:i + n + 1] if shared else run.times[:, i:i + n + 1].t().unsqueeze(-1)
    zs, costs = run.solver.advance(run.sde, run.drift_cost, ts, ts.diff(dim=0), z, dW, H, cost)
    for j in range(n):
        if i + j + 1 in run.record_set:
            on_record(i + j + 1, zs[j], None if costs is None else costs[j])
    return zs[-1], (None if costs is None else costs[-1])
