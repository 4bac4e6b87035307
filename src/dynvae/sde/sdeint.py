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
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from dynvae.errors import ConfigError, DataError
from dynvae.sde.brownian import BrownianPath
from dynvae.sde.sde import SDE, SDEWithRunningCost, check_sde
from dynvae.sde.solvers import EulerMaruyama, Solver
from dynvae.timegrid import check_time_grid

_CHUNK_ELEMENTS = 1 << 22  # noise is drawn for this many numbers at a time


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
           bm: BrownianPath | None = None, generator: torch.Generator | None = None
           ) -> SDESolution:
    """Solve an SDE from z0 and return the solution at the times t.

    sde: an SDE (its running cost, if any, is integrated alongside).
    z0: (*batch, Z) initial state at t[..., 0].
    t: (T,) shared grid or (*batch, T) per-sequence grids, strictly increasing.
    solver: a Solver (default EulerMaruyama()); checked against the SDE first.
    dt: largest step; None steps once per observation interval.
    bm: optional BrownianPath of shape (*batch, W) covering the grid, to reuse one
        path across step sizes; otherwise increments are drawn with ``generator``.
    Differentiable by backpropagation through the steps.
    """
    solver = EulerMaruyama() if solver is None else solver
    if not isinstance(solver, Solver):
        raise ConfigError(f"solver must be a dynvae.sde.solvers.Solver, got {solver!r}")
    solver.check(sde)
    z, tt, batch_shape = _validate(z0, t, dt)
    times, obs_steps = step_schedule(tt, dt)  # (R, N+1), (T,)
    shared = times.shape[0] == 1
    B, Z = z.shape
    t_first = times[0, 0] if shared else times[:, :1]
    W, cost_shape = check_sde(sde, t_first, z)
    drift_cost = _drift_cost(sde)
    t_steps = list(times[0].unbind(0)) if shared else list(times.t().unsqueeze(-1).unbind(0))
    hs = torch.diff(times, dim=-1)  # (R, N)
    h_steps = hs[0].tolist() if shared else list(hs.t().unsqueeze(-1).unbind(0))
    blocks = _noise(bm, times, hs, B, W, solver.needs_levy_area, generator, batch_shape,
                    solver.steps_per_call)
    # accumulated running cost at t_0: (B, C), or None without a running cost
    cost0 = None if cost_shape is None else z.new_zeros(B, cost_shape[0] if cost_shape else 1)
    if solver.steps_per_call > 1:
        return _solve_in_blocks(solver, sde, drift_cost, z, cost0, times, blocks, obs_steps,
                                cost_shape, batch_shape)
    recorded = torch.unique(obs_steps)  # sorted step indices some sequence records
    record = set(recorded.tolist())
    zs, costs, cost, i = [z], [cost0], None, 0
    for dW_block, H_block in blocks:
        H_steps = [None] * dW_block.shape[0] if H_block is None else H_block.unbind(0)
        for dW, H in zip(dW_block.unbind(0), H_steps, strict=True):
            z, dc = solver.step(sde, drift_cost, t_steps[i], t_steps[i + 1], h_steps[i], z,
                                dW, H)
            if dc is not None:
                cost = dc if cost is None else cost + dc
            i += 1
            if i in record:
                zs.append(z)
                costs.append(cost)
    return _at_observations(torch.stack(zs), None if cost_shape is None else torch.stack(costs),
                            torch.searchsorted(recorded, obs_steps), batch_shape, cost_shape)


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


def _solve_in_blocks(solver: Solver, sde: SDE, drift_cost, z: Tensor, cost: Tensor | None,
                     times: Tensor, blocks, obs_steps: Tensor, cost_shape: tuple | None,
                     batch_shape: tuple) -> SDESolution:
    """Drive a solver that takes several steps per call (``Solver.advance``)."""
    shared = times.shape[0] == 1
    ts = times[0] if shared else times.t().unsqueeze(-1)  # (N + 1,) or (N + 1, B, 1)
    hs = torch.diff(ts, dim=0)
    k = solver.steps_per_call
    z_parts, cost_parts, start = [z.unsqueeze(0)], [], 0
    if cost is not None:
        cost_parts.append(cost.unsqueeze(0))
    for dW_block, H_block in blocks:
        for s in range(0, dW_block.shape[0], k):
            dW = dW_block[s:s + k]
            H = None if H_block is None else H_block[s:s + k]
            n = dW.shape[0]
            zs, cs = solver.advance(sde, drift_cost, ts[start:start + n + 1],
                                    hs[start:start + n], z, dW, H, cost)
            z, start = zs[-1], start + n
            z_parts.append(zs)
            if cs is not None:
                cost = cs[-1]
                cost_parts.append(cs)
    return _at_observations(torch.cat(z_parts), torch.cat(cost_parts) if cost_parts else None,
                            obs_steps, batch_shape, cost_shape)


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


def _noise(bm: BrownianPath | None, times: Tensor, hs: Tensor, B: int, W: int, levy: bool,
           generator: torch.Generator | None, batch_shape: tuple, multiple: int = 1
           ) -> Iterator[tuple[Tensor, Tensor | None]]:
    """Blocks of consecutive steps' noise (dW (n, B, W), H (n, B, W) or None), from a
    BrownianPath or drawn on the fly in blocks of a multiple of ``multiple`` steps."""
    if bm is not None:
        if not isinstance(bm, BrownianPath) or bm.shape != (*batch_shape, W):
            raise DataError(f"bm must be a BrownianPath of shape {(*batch_shape, W)}, got "
                            f"{getattr(bm, 'shape', type(bm).__name__)}")
        grid = times[0] if times.shape[0] == 1 else times.reshape(*batch_shape, -1)
        dW, H = bm.increments(grid.to(bm.dtype))
        dW = dW.reshape(B, -1, W).to(times.dtype).transpose(0, 1)
        H = H.reshape(B, -1, W).to(times.dtype).transpose(0, 1) if levy else None
        return iter([(dW, H)])
    return _drawn_noise(hs, B, W, levy, generator, multiple)


def _drawn_noise(hs: Tensor, B: int, W: int, levy: bool, generator: torch.Generator | None,
                 multiple: int = 1):
    N = hs.shape[-1]
    chunk = max(1, _CHUNK_ELEMENTS // (B * W * (2 if levy else 1)))
    chunk = max(multiple, chunk // multiple * multiple)
    sqrt_h = hs.t().clamp_min(0).sqrt().unsqueeze(-1)  # (N, R, 1)
    for start in range(0, N, chunk):
        stop = min(N, start + chunk)
        shape = (stop - start, B, W)
        dW = torch.randn(shape, generator=generator, dtype=hs.dtype, device=hs.device)
        dW = dW * sqrt_h[start:stop]
        H = None
        if levy:  # H ~ N(0, h / 12), independent of dW.
            H = torch.randn(shape, generator=generator, dtype=hs.dtype, device=hs.device)
            H = H * (sqrt_h[start:stop] / math.sqrt(12.0))
        yield dW, H
