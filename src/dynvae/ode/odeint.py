"""Solve dz/dt = f(t, z) on shared or per-sequence time grids.

Fixed-step solvers take the steps of :func:`dynvae.sde.step_schedule`: every observation
interval [t_k, t_{k+1}] of a row is cut into ceil((t_{k+1} - t_k) / dt) equal steps, and
a row that needs fewer steps than the longest one ends with zero-length steps, which
leave it unchanged. Adaptive solvers give every row its own step size and error test;
the steps cross observation times, which are read from the solver's dense output, and
stop at the row's last time; a row that has reached it takes zero-length steps until
every row has. Either way each row follows exactly the steps it would take if
solved alone, and a batch costs the steps of its most demanding row.

Gradients flow by backpropagation through the accepted steps (the step-size controller
is not differentiated, as is usual for adaptive solvers). With ``checkpoint_every = n``
the steps run in segments of n under :func:`torch.utils.checkpoint.checkpoint`: only the
state at segment boundaries (and at observation times) is kept, and each segment's
stages are recomputed during the backward pass, which gives the same gradient with
memory that no longer grows with the number of stages.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from dynvae.errors import ConfigError, DataError, NumericalError
from dynvae.ode.solvers import Adaptive, DormandPrince, ODESolver
from dynvae.ode.tableau import VectorField, dense_output, error_estimate, rk_step
from dynvae.sde.sdeint import step_schedule


def odeint(f: VectorField, z0: Tensor, t: Tensor, solver: ODESolver | None = None,
           dt: float | None = None, checkpoint_every: int | None = None,
           lengths: Tensor | None = None) -> Tensor:
    """Solution of dz/dt = f(t, z), z(t_0) = z0, at the times t: (*batch, T, Z).

    f: vector field; called as f(t, z) with z (R, Z) (R rows: the flattened batch) and t a
        0-dim tensor when all rows share the step (shared grid, fixed steps) or (R, 1).
    z0: (*batch, Z) initial states at t[..., 0].
    t: (T,) shared grid or (*batch, T) per-row grids, strictly increasing.
    solver: an ODESolver (default DormandPrince(): rtol 1e-3, atol 1e-4).
    dt: largest step of a fixed-step solver (None: one step per interval); adaptive
        solvers choose their own steps and take no dt.
    checkpoint_every: None, or a number of steps per checkpointed segment (see the
        module docstring).
    lengths: optional (*batch,) number of valid times of each row of a per-row grid; the
        times after them are padding, may hold anything and take no part (the solution
        there repeats the value at the row's last valid time).
    """
    solver = DormandPrince() if solver is None else solver
    if not isinstance(solver, ODESolver):
        raise ConfigError(f"solver must be a dynvae.ode.ODESolver, got {solver!r}")
    if solver.adaptive and dt is not None:
        raise ConfigError(f"{solver!r} chooses its own steps: dt must be None, got {dt!r}")
    if checkpoint_every is not None and (isinstance(checkpoint_every, bool) or not isinstance(
            checkpoint_every, int) or checkpoint_every < 1):
        raise ConfigError(f"checkpoint_every must be a positive integer or None, got "
                          f"{checkpoint_every!r}")
    z, tt, batch_shape, last = _validate(z0, t, dt, lengths)
    _check_field(f, z, tt)
    if isinstance(solver, Adaptive):
        out = _solve_adaptive(solver, f, z, tt.expand(z.shape[0], -1), checkpoint_every, last)
    else:
        out = _solve_fixed(solver, f, z, tt, dt, checkpoint_every)
    if last is not None:                     # padding repeats the last valid value
        padding = torch.arange(tt.shape[-1], device=z.device)[None, :, None] > last[..., None]
        out = torch.where(padding, out.gather(1, last[..., None].expand(-1, 1, out.shape[-1])),
                          out)
    return out.reshape(*batch_shape, tt.shape[-1], z.shape[-1])


def _segments(run: Callable, state: tuple, checkpoint_every: int | None, more: Callable
              ) -> tuple[tuple, list[Tensor]]:
    """Drive ``run(state, n) -> (state, recorded states)`` until ``more(state, start)`` is
    False, in segments of ``checkpoint_every`` steps under checkpointing (or all at once)."""
    recorded, start = [], 0
    while more(state, start):
        if checkpoint_every is None:
            state, part = run(state, start, math.inf)
        else:   # the segment is rerun in the backward pass: bind its start now
            segment = lambda *s, start=start: _flat(run(s, start, checkpoint_every))
            out = checkpoint(segment, *state, use_reentrant=False)
            state, part = tuple(out[:len(state)]), list(out[len(state):])
        recorded.extend(part)
        start += len(part)
    return state, recorded


def _flat(result: tuple[tuple, list[Tensor]]) -> tuple[Tensor, ...]:
    state, part = result
    return (*state, *part)


# ---------------------------------------------------------------------- fixed steps
def _solve_fixed(solver: ODESolver, f: VectorField, z: Tensor, tt: Tensor, dt: float | None,
                 checkpoint_every: int | None) -> Tensor:
    """Fixed steps of ``step_schedule`` on tt (1, T) shared or (R, T) per row -> (R, T, Z)."""
    times, obs_steps = step_schedule(tt, dt)                       # (R', N + 1), (R', T)
    shared = times.shape[0] == 1
    N = times.shape[1] - 1
    ts = list(times[0].unbind(0)) if shared else list(times.t().unsqueeze(-1).unbind(0))
    hs = torch.diff(times, dim=-1)
    h_steps = hs[0].tolist() if shared else list(hs.t().unsqueeze(-1).unbind(0))
    recorded = torch.unique(obs_steps)                               # step indices to keep
    keep = set(recorded.tolist())

    def run(state: tuple, start: int, n: float) -> tuple[tuple, list[Tensor]]:
        (z,), out = state, []
        for i in range(start, int(min(N, start + n))):
            z = rk_step(solver.tableau, f, ts[i], h_steps[i], z)[0]
            out.append(z)
        return (z,), out

    (_,), states = _segments(run, (z,), checkpoint_every,
                             lambda state, start: start < N)
    kept = [z] + [s for i, s in enumerate(states, start=1) if i in keep]
    index = torch.searchsorted(recorded, obs_steps)                  # (R', T)
    return _gather(torch.stack(kept), index)


def _gather(zs: Tensor, index: Tensor) -> Tensor:
    """zs (S, R, Z) states, index (R' in {1, R}, T) which state holds observation k of row
    r -> (R, T, Z)."""
    rows = torch.arange(zs.shape[1], device=zs.device)[:, None]
    return zs[index.expand(zs.shape[1], -1), rows]


def advance(f: VectorField, z: Tensor, t0: Tensor, span: Tensor, solver: ODESolver,
            dt: float | None = None) -> Tensor:
    """z (R, Z) at t0 (R, 1) carried over span (R, 1) >= 0 of time with fixed steps: each
    row takes ceil(span / dt) equal steps (one when dt is None), none when its span is 0.
    For recurrences that jump between integrations (the ODE-RNN), with any row's span
    allowed to be 0 (padding); an adaptive ``solver`` is rejected."""
    if solver.adaptive:
        raise ConfigError(f"advance takes a fixed-step solver, got {solver!r}")
    if dt is None:
        n = (span > 0).long()                                        # (R, 1)
    else:
        n = torch.ceil(span / dt * (1 - 1e3 * torch.finfo(span.dtype).eps)).clamp_min(0)
        n = torch.where(span > 0, n.clamp_min(1), torch.zeros_like(n)).long()
    h = torch.where(n > 0, span / n.clamp_min(1), torch.zeros_like(span))
    for i in range(int(n.max()) if n.numel() else 0):
        h_i = torch.where(n > i, h, torch.zeros_like(h))
        z = rk_step(solver.tableau, f, t0 + i * h, h_i, z)[0]
    return z


# ------------------------------------------------------------------- adaptive steps
def _solve_adaptive(solver: Adaptive, f: VectorField, z: Tensor, tt: Tensor,
                    checkpoint_every: int | None, last_index: Tensor | None) -> Tensor:
    """Per-row adaptive steps on tt (R, T) up to each row's last valid time (index
    ``last_index`` (R, 1), or T - 1) -> (R, T, Z). Steps end where the error control puts
    them and at that time; the observation times inside a step are read from the
    tableau's dense output."""
    R, T = tt.shape
    t0 = tt[:, :1]                                                   # (R, 1)
    last = tt[:, -1:] if last_index is None else tt.gather(1, last_index)
    h0 = _initial_step(solver, f, t0, z, last - t0)
    out = torch.where(torch.arange(T, device=z.device)[None, :, None] == 0, z[:, None],
                      torch.zeros_like(z[:, None]))                  # (R, T, Z): z(t_0) set
    state = (z, f(t0, z), t0, h0, out)

    def run(state: tuple, start: int, n: float) -> tuple[tuple, list[Tensor]]:
        done, i = [], start
        while i < start + n and bool((state[2] < last).any()):
            if i >= solver.max_steps:
                _raise_max_steps(solver, last, state[2])
            state = _attempt(solver, f, tt, last, state)
            done.append(state[0])
            i += 1
        return state, done

    state, _ = _segments(run, state, checkpoint_every,
                         lambda state, start: bool((state[2] < last).any()))
    return state[4]


def _attempt(solver: Adaptive, f: VectorField, tt: Tensor, t_end: Tensor, state: tuple
             ) -> tuple:
    """One attempted step of every row that has not reached its last time t_end (R, 1)."""
    z, k1, t, h, out = state
    done = t >= t_end                                                # (R, 1)
    remaining = t_end - t
    # a step within 1% of the end goes all the way (no sliver step after it)
    h_try = torch.where(remaining <= 1.01 * h, remaining, h)
    h_try = torch.where(done, torch.zeros_like(h_try), h_try)
    z_new, ks = rk_step(solver.tableau, f, t, h_try, z, k1)
    with torch.no_grad():
        err = _error_norm(solver, error_estimate(solver.tableau, h_try, ks), z, z_new)
        err = torch.where(torch.isfinite(err) & torch.isfinite(z_new).all(-1), err,
                          torch.full_like(err, math.inf))[:, None]
        accept = (err <= 1) | done
        end = accept & ~done & (h_try >= remaining)
        factor = (solver.safety * err.clamp_min(1e-10) ** -solver.exponent).clamp(
            solver.min_factor, solver.max_factor)
        h_next = torch.where(end, torch.maximum(h_try * factor, h), h_try * factor)
        h_next = torch.where(done, h, h_next)
        _check_underflow(solver, accept[:, 0], h_next, t)
        t_new = torch.where(end, t_end, torch.where(accept, t + h_try, t))
        inside = accept & ~done & (tt > t) & (tt <= t_new)           # (R, T) read this step
    if bool(inside.any()):
        theta = torch.where(inside, (tt - t) / torch.where(done, 1.0, h_try), 0.0)
        values = dense_output(solver.tableau, h_try, z, z_new, ks, theta)   # (R, T, Z)
        values = torch.where((tt == t_new)[..., None], z_new[:, None], values)
        out = torch.where(inside[..., None], values, out)
    z = torch.where(accept, z_new, z)
    k1 = torch.where(accept, ks[-1], k1) if solver.tableau.fsal else f(t_new, z)
    return z, k1, t_new, h_next, out


def _error_norm(solver: Adaptive, error: Tensor, z: Tensor, z_new: Tensor) -> Tensor:
    """(R,) scaled RMS error (solvers module docstring)."""
    scale = solver.atol + solver.rtol * torch.maximum(z.abs(), z_new.abs())
    return (error / scale).pow(2).mean(-1).sqrt()


@torch.no_grad()
def _initial_step(solver: Adaptive, f: VectorField, t0: Tensor, z0: Tensor, span: Tensor
                  ) -> Tensor:
    """(R, 1) first step of each row, Hairer, Norsett & Wanner (sec. II.4, "Starting step
    size"), at most the row's time span (rows of one time, with nothing to solve, get 1)."""
    span = torch.where(span > 0, span, torch.ones_like(span))
    scale = solver.atol + solver.rtol * z0.abs()
    f0 = f(t0, z0)
    rms = lambda v: (v / scale).pow(2).mean(-1, keepdim=True).sqrt()           # (R, 1)
    d0, d1 = rms(z0), rms(f0)
    h0 = torch.where((d0 < 1e-5) | (d1 < 1e-5), torch.full_like(d0, 1e-6),
                     0.01 * d0 / d1.clamp_min(1e-30))
    h0 = torch.minimum(h0, span)
    d2 = rms(f(t0 + h0, z0 + h0 * f0) - f0) / h0
    dmax = torch.maximum(d1, d2)
    h1 = torch.where(dmax <= 1e-15, torch.maximum(torch.full_like(h0, 1e-6), h0 * 1e-3),
                     (0.01 / dmax.clamp_min(1e-30)) ** (1.0 / (solver.order + 1)))
    h = torch.minimum(torch.minimum(100 * h0, h1), span)
    if not bool(torch.isfinite(h).all() & (h > 0).all()):
        raise NumericalError(f"{solver!r}: the vector field is not finite at the initial "
                             "state, no first step can be chosen")
    return h


def _check_underflow(solver: Adaptive, accept: Tensor, h: Tensor, t: Tensor) -> None:
    small = ~accept & (h[:, 0] <= 1e-12 * t[:, 0].abs().clamp_min(1.0))
    if bool(small.any()):
        r = int(small.nonzero()[0, 0])
        raise NumericalError(f"{solver!r}: step size underflow at t = {float(t[r, 0]):g} "
                             f"(row {r}); the vector field is non-finite or too stiff there")


def _raise_max_steps(solver: Adaptive, last: Tensor, t: Tensor) -> None:
    r = int((t[:, 0] < last[:, 0]).nonzero()[0, 0])
    raise NumericalError(f"{solver!r}: {solver.max_steps} steps did not reach the last time "
                         f"{float(last[r, 0]):g} of row {r} (at t = {float(t[r, 0]):g}); the "
                         "ODE is stiff or exploding, or max_steps is too small")


# ------------------------------------------------------------------------- checks
def _validate(z0: Tensor, t: Tensor, dt: float | None, lengths: Tensor | None
              ) -> tuple[Tensor, Tensor, tuple, Tensor | None]:
    """z (R, Z); t (1, T) or (R, T), padding replaced by times just after each row's last
    valid one; the batch shape of z0; each row's last valid index (R, 1) or None."""
    if not isinstance(z0, Tensor) or not torch.is_floating_point(z0) or z0.dim() < 2:
        got = f"{tuple(z0.shape)} {z0.dtype}" if isinstance(z0, Tensor) else type(z0).__name__
        raise DataError(f"z0 must be a floating tensor of shape (*batch, Z), got {got}")
    if not bool(torch.isfinite(z0).all()):
        raise DataError("z0 contains NaN or inf")
    batch_shape = tuple(z0.shape[:-1])
    t = torch.as_tensor(t, device=z0.device).to(z0.dtype)
    if t.dim() != 1 and tuple(t.shape[:-1]) != batch_shape:
        raise DataError(f"t must be (T,) or (*batch, T) with batch {batch_shape}, got "
                        f"{tuple(t.shape)}")
    if dt is not None and not (isinstance(dt, int | float) and math.isfinite(dt) and dt > 0):
        raise ConfigError(f"dt must be a positive finite number or None, got {dt!r}")
    z = z0.reshape(-1, z0.shape[-1])
    T = t.shape[-1]
    tt = t.reshape(1, -1) if t.dim() == 1 else t.reshape(z.shape[0], -1)
    last = None
    if lengths is not None:
        lengths = torch.as_tensor(lengths, device=z.device)
        if tuple(lengths.shape) != batch_shape or torch.is_floating_point(lengths) or bool(
                ((lengths < 1) | (lengths > T)).any()):
            raise DataError(f"lengths must be integers in [1, T={T}] of shape {batch_shape}")
        last = lengths.reshape(-1, 1).long() - 1                                  # (R, 1)
        tt = _pad_after(tt.expand(z.shape[0], -1), last)
    if T < 1 or not bool(torch.isfinite(tt).all()):
        raise DataError("t must hold at least one time, all finite")
    if bool((torch.diff(tt, dim=-1) <= 0).any()):
        raise DataError("t must be strictly increasing along its last axis")
    return z, tt, batch_shape, last


def _pad_after(tt: Tensor, last: Tensor) -> Tensor:
    """tt (R, T) with the times after index last (R, 1) replaced by t_last + j * 1e-6 *
    max(1, |t_last|), j = 1, 2, ...: increasing, and only as far as padding needs."""
    steps = torch.arange(tt.shape[1], device=tt.device)[None] - last           # (R, T)
    t_last = tt.gather(1, last)
    pad = t_last + steps.clamp_min(0).to(tt) * 1e-6 * t_last.abs().clamp_min(1.0)
    return torch.where(steps > 0, pad, tt)


def _check_field(f: VectorField, z: Tensor, tt: Tensor) -> None:
    """Call f once at the initial state and name a wrong shape or dtype."""
    with torch.no_grad():
        dz = f(tt[0, 0] if tt.shape[0] == 1 else tt[:, :1], z)
    if not isinstance(dz, Tensor) or dz.shape != z.shape or dz.dtype != z.dtype:
        got = f"{tuple(dz.shape)} {dz.dtype}" if isinstance(dz, Tensor) else type(dz).__name__
        raise DataError(f"the vector field must return a tensor like z, {tuple(z.shape)} "
                        f"{z.dtype}, got {got}")
