"""Fixed-step SDE integration on shared or per-sequence time grids.

Every observation interval [t_k, t_{k+1}] of a sequence is cut into
n = ceil((t_{k+1} - t_k) / dt) equal steps, so steps land exactly on observation
times and no step exceeds dt. With per-sequence grids t (B, T) every sequence takes
its own steps, and the batch advances one step index at a time: a sequence that
needs fewer steps than the longest one ends with zero-length steps (h = 0, dW = 0,
which leave z unchanged). So each sequence follows exactly the steps it would take
if solved alone, and a batch costs as many steps as its longest sequence needs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from dynvae.errors import ConfigError, DataError
from dynvae.sde.brownian import BrownianMotion
from dynvae.sde.gradients import Backprop, Gradients
from dynvae.sde.noise import make_noise
from dynvae.sde.sde import SDE, SDEWithRunningCost, check_sde
from dynvae.sde.solvers import EulerMaruyama, Solver
from dynvae.sde.stepping import StepRun
from dynvae.timegrid import check_time_grid


@dataclass(frozen=True)
class SDESolution:
    """z: (*batch, T, Z) solution at the requested times. running_cost: integral of the
    SDE's running cost from t_0 to each t_k, (*batch, T) or (*batch, T, C); None when
    the SDE has no running cost."""

    z: Tensor
    running_cost: Tensor | None = None


def step_schedule(t: Tensor, dt: float | None) -> tuple[Tensor, Tensor]:
    """Step times that land on every observation time.

    t: (R, T) observation times, strictly increasing (R = 1 for a shared grid).
    Returns (times (R, N + 1), obs_steps (R, T)) with
    times.gather(1, obs_steps) == t: row r takes its own obs_steps[r, -1] steps and
    repeats its last time (zero-length steps) up to N, the most any row needs.
    """
    R, T = t.shape
    delta = torch.diff(t, dim=-1)  # (R, T-1)
    if dt is None:
        n_rk = torch.ones_like(delta, dtype=torch.long)
    else:
        ratio = delta / dt
        tol = 1e3 * torch.finfo(t.dtype).eps
        n_rk = torch.ceil(ratio * (1 - tol)).clamp_min(1).long()  # (R, T-1)
    obs_steps = torch.cat([n_rk.new_zeros(R, 1), n_rk.cumsum(-1)], dim=-1)  # (R, T)
    N = int(obs_steps[:, -1].max())
    if N == 0:
        return t[:, :1], obs_steps
    j = torch.arange(1, N + 1, device=t.device).expand(R, N)  # step j ends at times[:, j]
    k = torch.searchsorted(obs_steps[:, 1:].contiguous(), j.contiguous())  # its interval
    beyond = k >= T - 1  # past the row's last observation
    k = k.clamp_max(T - 2)
    within = (j - obs_steps.gather(1, k)).to(t.dtype)  # 1..n within the interval
    n_own = n_rk.gather(1, k).to(t.dtype)
    ends = torch.where(within >= n_own, t.gather(1, k + 1),
                       t.gather(1, k) + within / n_own * delta.gather(1, k))
    ends = torch.where(beyond, t[:, -1:], ends)
    return torch.cat([t[:, :1], ends], dim=-1), obs_steps


def sdeint(sde: SDE, z0: Tensor, t: Tensor, solver: Solver | None = None, dt: float | None = None,
           bm: BrownianMotion | None = None, generator: torch.Generator | None = None,
           gradients: Gradients | None = None) -> SDESolution:
    """Solve an SDE from z0 and return the solution at the times t.

    sde: an SDE (its running cost, if any, is integrated alongside).
    z0: (*batch, Z) initial state at t[..., 0].
    t: (T,) shared grid or (*batch, T) per-sequence grids, strictly increasing.
    solver: a Solver (default EulerMaruyama()); checked against the SDE first.
    dt: largest step; None steps once per observation interval.
    bm: optional BrownianMotion (``BrownianPath`` or ``BrownianTree``) of shape
        (*batch, W) covering the grid; otherwise the steps' noise is drawn, keyed by a
        seed taken from ``generator``, so that any block of steps can be drawn again.
    gradients: how the solution is differentiated: ``Backprop()`` (default),
        ``CheckpointedBlocks(steps)`` or ``dynvae.sde.Adjoint(params)`` (memory
        independent of the number of steps).
    """
    solver = EulerMaruyama() if solver is None else solver
    if not isinstance(solver, Solver):
        raise ConfigError(f"solver must be a dynvae.sde.solvers.Solver, got {solver!r}")
    gradients = Backprop() if gradients is None else gradients
    if not isinstance(gradients, Gradients):
        raise ConfigError(f"gradients must be Backprop(), CheckpointedBlocks(...) or "
                          f"Adjoint(...), got {gradients!r}")
    solver.check(sde)
    z, tt, batch_shape = _validate(z0, t, dt)
    times, obs_steps = step_schedule(tt, dt)  # (R, N+1), (R, T)
    B, Z = z.shape
    t_first = times[0, 0] if times.shape[0] == 1 else times[:, :1]
    W, cost_shape = check_sde(sde, t_first, z)
    noise = make_noise(bm, times, batch_shape, W, solver.needs_levy_area, generator)
    recorded = torch.unique(obs_steps)  # sorted step indices some sequence records
    run = StepRun(solver, sde, _drift_cost(sde), times, noise, recorded.tolist(),
                  None if cost_shape is None else (cost_shape[0] if cost_shape else 1))
    # accumulated running cost at t_0: (B, C), or None without a running cost
    cost0 = None if cost_shape is None else z.new_zeros(B, run.cost_width)
    zs, costs = gradients.solve(run, z, cost0)
    return _at_observations(zs, costs, torch.searchsorted(recorded, obs_steps), batch_shape,
                            cost_shape)


def _at_observations(zs: Tensor, costs: Tensor | None, index: Tensor, batch_shape: tuple,
                     cost_shape: tuple | None) -> SDESolution:
    """States (and accumulated costs) at each sequence's observation times.

    zs (S, B, Z), costs (S, B, C) or None: at S recorded steps; index (R, T): which
    recorded step holds observation k of row r (R = 1: the batch shares one grid).
    """
    rows = torch.arange(zs.shape[1], device=index.device)[:, None]
    index = index.expand(zs.shape[1], -1)
    out = zs[index, rows].reshape(*batch_shape, -1, zs.shape[-1])  # (*batch, T, Z)
    if costs is None:
        return SDESolution(out)
    return SDESolution(out, costs[index, rows].reshape(*batch_shape, -1, *cost_shape))


def _validate(z0: Tensor, t: Tensor, dt: float | None) -> tuple[Tensor, Tensor, tuple]:
    if not isinstance(z0, Tensor) or not torch.is_floating_point(z0) or z0.dim() < 2:
        raise DataError(f"z0 must be a floating tensor of shape (*batch, Z), got {_desc(z0)}")
    if not torch.isfinite(z0).all():
        raise DataError("z0 contains NaN or inf")
    batch_shape = tuple(z0.shape[:-1])
    t = torch.as_tensor(t, device=z0.device).to(z0.dtype)
    if t.dim() != 1 and tuple(t.shape[:-1]) != batch_shape:
        raise DataError(f"t must be (T,) or (*batch, T) with batch {batch_shape}, got "
                        f"{tuple(t.shape)}")
    check_time_grid(t, name="t")
    if dt is not None and not (isinstance(dt, int | float) and math.isfinite(dt) and dt > 0):
        raise ConfigError(f"dt must be a positive finite number or None, got {dt!r}")
    z = z0.reshape(-1, z0.shape[-1])
    tt = t.reshape(1, -1) if t.dim() == 1 else t.reshape(z.shape[0], -1)
    return z, tt, batch_shape


def _desc(x: object) -> str:
    return f"{tuple(x.shape)} {x.dtype}" if isinstance(x, Tensor) else type(x).__name__


def _drift_cost(sde: SDE):
    if isinstance(sde, SDEWithRunningCost):
        def drift_cost(t, z):
            f, c = sde.drift_and_cost(t, z)
            return f, (c.unsqueeze(-1) if c.dim() == 1 else c)
        return drift_cost
    return lambda t, z: (sde.drift(t, z), None)
