"""The one validator of time grids, shared by the data types, the SDE and GP code and
the models: times are finite and strictly increasing (README.md, "Data")."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from dynvae.errors import DataError


def check_time_grid(t: Tensor | np.ndarray, *, name: str = "t", ndim: int | None = None,
                    lengths: Tensor | None = None) -> None:
    """Raise DataError unless ``t`` is finite and strictly increasing along its last axis.

    Args:
        t: (…, T) times (a tensor or an array).
        name: how the error names the times, e.g. ``"t_future"`` or ``"sequence 'a'"``;
            for several rows the row is added (``"t of sequence 2"``).
        ndim: if given, the number of dimensions ``t`` must have.
        lengths: (B,) for t (B, T): row b is checked over its first lengths[b] entries
            only (what lies beyond, padding, may hold anything).
    """
    if isinstance(t, np.ndarray) and lengths is None and t.ndim >= 1 and t.shape[-1] > 0 \
            and (ndim is None or t.ndim == ndim):
        with np.errstate(invalid="ignore"):       # fast path for valid arrays: numpy only
            if np.isfinite(t).all() and (np.diff(t, axis=-1) > 0).all():
                return
    if isinstance(t, np.ndarray) and not t.flags.writeable:
        t = t.copy()               # torch warns on read-only arrays (e.g. pandas' views)
    t = torch.as_tensor(t)
    if ndim is not None and t.ndim != ndim:
        axes = "(T,)" if ndim == 1 else f"{ndim} axes"
        raise DataError(f"{name} must have shape {axes}, got {tuple(t.shape)}")
    if t.ndim == 0 or t.shape[-1] == 0:
        raise DataError(f"{name} must hold at least one time, got shape {tuple(t.shape)}")
    rows = t.reshape(-1, t.shape[-1])                                     # (R, T)
    steps = torch.arange(rows.shape[1], device=rows.device)
    valid = torch.ones(rows.shape, dtype=torch.bool, device=rows.device) if lengths is None \
        else steps[None, :] < lengths.to(rows.device).reshape(-1, 1)     # (R, T)
    where = (lambda r: name) if t.ndim == 1 else (lambda r: f"{name} of sequence {r}")
    bad = valid & ~torch.isfinite(rows)
    if bool(bad.any()):
        r, k = (int(i) for i in bad.nonzero()[0])
        raise DataError(f"{where(r)} has a non-finite time {float(rows[r, k])} at index {k}; "
                        "times must be finite (no NaN or inf)")
    down = (rows[:, 1:] <= rows[:, :-1]) & valid[:, 1:]                   # (R, T-1)
    if bool(down.any()):
        r, k = (int(i) for i in down.nonzero()[0])
        now, before = float(rows[r, k + 1]), float(rows[r, k])
        kind = "duplicate" if now == before else "non-increasing"
        raise DataError(f"{where(r)} has {kind} time {now:g} (after {before:g}) at index "
                        f"{k + 1}; times must be strictly increasing")
