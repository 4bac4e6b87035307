"""Adaptive steps with error control by step doubling, on each sequence's own times.

Every row b of the batch keeps its own time t_b and step h_b. A trial compares one
step of size h with two steps of size h / 2 driven by the same Brownian path (the
half steps' increments sum to the full step's, and the full step's Levy area is
H = (H_a + H_b) / 2 + (dW_a - dW_b) / 4), and the per-row error

    err_b = RMS_i |z2_i - z1_i| / (atol + rtol max(|z_i|, |z2_i|))

accepts the two half steps when err_b <= 1 (local extrapolation). The next step is
h * clamp(0.9 err^(-1 / (p + 1/2)), 0.2, 2) for a scheme of strong order p (its local
error is O(h^(p + 1/2))), and never steps past the row's next observation time, which
is therefore hit exactly. The path is a ``BrownianMotion`` queried at the trial
times (a ``BrownianTree`` by default): a rejected trial is asked again on a finer
grid of the same path, so rejections do not bias the solution (Gaines & Lyons 1997,
"Variable step size control in the numerical solution of SDEs"). Rows are
independent: each is solved exactly as it would be alone.

Differentiable by backpropagation (the step-size decisions are not differentiated).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from dynvae.errors import ConfigError, DataError
from dynvae.sde.brownian import BrownianMotion
from dynvae.sde.brownian_tree import BrownianTree
from dynvae.sde.sde import SDE, check_sde
from dynvae.sde.sdeint import SDESolution, _drift_cost, _validate
from dynvae.sde.solvers import Solver


@dataclass(frozen=True)
class AdaptiveStats:
    """accepted, rejected: trials over the whole batch (a trial advances every row
    still running); steps (B,) accepted steps per row."""

    accepted: int
    rejected: int
    steps: Tensor


def sdeint_adaptive(sde: SDE, z0: Tensor, t: Tensor, solver: Solver, *, rtol: float = 1e-3,
                    atol: float = 1e-4, dt0: float | None = None, bm: BrownianMotion | None = None,
                    max_trials: int = 100_000, generator: torch.Generator | None = None
                    ) -> tuple[SDESolution, AdaptiveStats]:
    """Solve with adaptive steps and return the solution at the times t (module doc).

    z0: (B, Z); t: (T,) or (B, T) strictly increasing. solver: any fixed-step Solver
    (checked against the SDE). dt0: first step (default a hundredth of each row's span).
    bm: BrownianMotion of shape (B, W) covering t (default a BrownianTree seeded from
    ``generator``). Raises DataError when max_trials is exhausted or a state is not
    finite.
    """
    solver.check(sde)
    _check_tolerances(rtol, atol, max_trials)
    z, tt, batch_shape = _validate(z0, t, None)
    if len(batch_shape) != 1:
        raise DataError(f"sdeint_adaptive takes z0 of shape (B, Z), got {tuple(z0.shape)}")
    B, Z = z.shape
    tt = tt.expand(B, -1).contiguous()                                     # (B, T)
    W, cost_shape = check_sde(sde, tt[:, :1], z)
    lo, hi = float(tt[:, 0].min()), float(tt[:, -1].max())
    if bm is None:
        bm = BrownianTree(lo, hi, (B, W), dtype=z.dtype, device=z.device, generator=generator)
    elif not isinstance(bm, BrownianMotion) or bm.shape != (B, W):
        raise DataError(f"bm must be a BrownianMotion of shape {(B, W)}, got "
                        f"{getattr(bm, 'shape', type(bm).__name__)}")
    if dt0 is not None and not (isinstance(dt0, int | float) and math.isfinite(dt0) and dt0 > 0):
        raise ConfigError(f"dt0 must be a positive number or None, got {dt0!r}")
    h0 = (tt[:, -1:] - tt[:, :1]) / 100 if dt0 is None else torch.full_like(tt[:, :1], dt0)
    state = _State(solver, sde, z, tt, cost_shape, h0)
    rejected = accepted = 0
    while not state.done():
        if accepted + rejected >= max_trials:
            raise DataError(f"sdeint_adaptive: {max_trials} trials did not reach the last "
                            f"observation (row times at {state.t.min().item():.6g}); raise "
                            f"max_trials or loosen rtol/atol")
        ok = state.trial(bm, rtol, atol)
        accepted += int(ok)
        rejected += int(not ok)
    return state.solution(batch_shape), AdaptiveStats(accepted, rejected, state.steps)


def _check_tolerances(rtol: float, atol: float, max_trials: int) -> None:
    for name, v in (("rtol", rtol), ("atol", atol)):
        if not (isinstance(v, int | float) and math.isfinite(v) and v >= 0):
            raise ConfigError(f"{name} must be a finite number >= 0, got {v!r}")
    if rtol == 0 and atol == 0:
        raise ConfigError("rtol and atol cannot both be 0")
    if not isinstance(max_trials, int) or max_trials < 1:
        raise ConfigError(f"max_trials must be a positive integer, got {max_trials!r}")


class _State:
    """Per-row times t (B, 1), steps h (B, 1), next observation index k (B,), and the
    recorded states (B, T, Z) (and costs (B, T, C))."""

    def __init__(self, solver, sde, z, tt, cost_shape, dt0):
        self.solver, self.sde, self.drift_cost = solver, sde, _drift_cost(sde)
        self.times, self.cost_shape = tt, cost_shape
        B, T = tt.shape
        self.z, self.t = z, tt[:, :1].clone()
        self.h = dt0                                                          # (B, 1)
        self.k = torch.ones(B, dtype=torch.long, device=z.device)
        self.zs, self.costs = [[z[b]] for b in range(B)], None
        self.cost = None
        if cost_shape is not None:
            self.cost = z.new_zeros(B, cost_shape[0] if cost_shape else 1)
            self.costs = [[self.cost[b]] for b in range(B)]
        self.steps = torch.zeros(B, dtype=torch.long, device=z.device)
        self.exponent = -1.0 / (solver.strong_order_for(sde.noise) + 0.5)

    def done(self) -> bool:
        return bool((self.k >= self.times.shape[1]).all())

    def trial(self, bm: BrownianMotion, rtol: float, atol: float) -> bool:
        """One trial for every running row; True if any row accepted."""
        T = self.times.shape[1]
        running = (self.k < T).unsqueeze(-1)                                  # (B, 1)
        target = self.times.gather(1, self.k.clamp_max(T - 1).unsqueeze(-1))  # (B, 1)
        h = torch.where(running, torch.minimum(self.h, target - self.t), 0.0)
        lands = running & (h >= target - self.t)
        t0, half = self.t, h / 2
        grid = torch.cat([t0, t0 + half, torch.where(lands, target, t0 + h)], -1)  # (B, 3)
        dW, H = bm.increments(grid)                                           # (B, 2, W)
        dW, H = dW.to(self.z.dtype), H.to(self.z.dtype)
        z1, _ = self._step(t0, h, self.z, dW.sum(1), (H[:, 0] + H[:, 1]) / 2
                           + (dW[:, 0] - dW[:, 1]) / 4)
        za, ca = self._step(t0, half, self.z, dW[:, 0], H[:, 0])
        z2, cb = self._step(t0 + half, half, za, dW[:, 1], H[:, 1])
        scale = atol + rtol * torch.maximum(self.z.abs(), z2.abs()).detach()
        err = ((z2 - z1).detach() / scale).pow(2).mean(-1, keepdim=True).sqrt()  # (B, 1)
        if not torch.isfinite(z2).all():
            raise DataError(f"sdeint_adaptive: the state became non-finite near t = "
                            f"{float(t0.max()):.6g}")
        accept = running & (err <= 1)
        self._accept(accept, lands, t0 + h, target, z2, ca, cb)
        factor = (0.9 * err.clamp_min(1e-10).pow(self.exponent)).clamp(0.2, 2.0)
        # a step cut short by an observation does not shrink the next one
        proposal = torch.where(accept & lands, torch.maximum(self.h, h * factor), h * factor)
        self.h = torch.where(running & (h > 0), proposal, self.h)
        return bool(accept.any())

    def _step(self, t0, h, z, dW, H):
        return self.solver.step(self.sde, self.drift_cost, t0, t0 + h, h, z, dW, H)

    def _accept(self, accept, lands, t_new, target, z2, ca, cb) -> None:
        self.z = torch.where(accept, z2, self.z)
        if self.cost is not None:
            self.cost = torch.where(accept, self.cost + ca + cb, self.cost)
        self.t = torch.where(accept, torch.where(lands, target, t_new), self.t)
        self.steps = self.steps + accept.squeeze(-1).long()
        for b in torch.nonzero((accept & lands).squeeze(-1)).flatten().tolist():
            self.zs[b].append(self.z[b])
            if self.cost is not None:
                self.costs[b].append(self.cost[b])
            self.k[b] += 1

    def solution(self, batch_shape: tuple) -> SDESolution:
        z = torch.stack([torch.stack(row) for row in self.zs])                 # (B, T, Z)
        if self.costs is None:
            return SDESolution(z)
        c = torch.stack([torch.stack(row) for row in self.costs])             # (B, T, C)
        return SDESolution(z, c.reshape(*batch_shape, -1, *self.cost_shape))
