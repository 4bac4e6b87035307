"""Brownian motion: increments on arbitrary grids and a path queryable at any times.

``BrownianPath`` stores a finite set of knots of one Brownian sample path together
with, for every elementary interval, its increment dW and its space-time Levy area
H = (1/h) int_s^u (W(r) - W(s)) dr - dW / 2. A query at new times refines the
stored path exactly by Gaussian conditioning (Brownian-bridge refinement, extended
to the time integral as in Foster, Lyons & Oberhauser 2020, "An optimal polynomial
approximation of Brownian motion"), so that any number of queries, in any order,
are jointly distributed as one Brownian path: a coarse grid's increments are the
sums of the increments of any finer grid asked later or earlier.

``BrownianMotion`` is the interface that ``sdeint`` reads noise from; ``BrownianPath``
(every knot stored: exact law for any queries, memory growing with them) and
``dynvae.sde.brownian_tree.BrownianTree`` (nothing stored: O(log) memory, any query
answered again identically) implement it.

Shapes: ``W(t)`` has shape (*batch, W) where W is the noise dimension. Query times
are (N,) for one grid shared by the whole batch, or (*batch, N) for one grid per
sequence.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Sequence

import torch
from torch import Tensor

from dynvae.errors import DataError


def brownian_increments(t: Tensor, shape: Sequence[int], generator: torch.Generator | None = None
                        ) -> Tensor:
    """Independent increments W(t_{k+1}) - W(t_k) ~ N(0, t_{k+1} - t_k) on a grid.

    t: (N,) shared grid or (*batch, N) per-sequence grids, non-decreasing.
    shape: (*batch, W), the shape of W(t).
    Returns dW: (*batch, N-1, W).
    """
    shape = tuple(shape)
    _check_grid(t, shape)
    dt = torch.diff(t, dim=-1)  # (N-1,) or (*batch, N-1)
    if t.dim() == 1:
        dt = dt.expand(*shape[:-1], -1)
    z = torch.randn(*shape[:-1], dt.shape[-1], shape[-1], generator=generator,
                    dtype=t.dtype, device=t.device)
    return z * dt.clamp_min(0).sqrt().unsqueeze(-1)


def _check_grid(t: Tensor, shape: tuple[int, ...]) -> None:
    if not torch.is_floating_point(t):
        raise DataError(f"times must be a floating-point tensor, got dtype {t.dtype}")
    if t.dim() == 0 or t.shape[-1] < 1:
        raise DataError(f"times must have shape (N,) or (*batch, N), got {tuple(t.shape)}")
    if t.dim() > 1 and tuple(t.shape[:-1]) != shape[:-1]:
        raise DataError(f"per-sequence times {tuple(t.shape)} do not match the batch shape "
                        f"{shape[:-1]} of the Brownian motion")
    if not torch.isfinite(t).all():
        raise DataError("times contain NaN or inf")
    if (torch.diff(t, dim=-1) < 0).any():
        raise DataError("times must be non-decreasing along the last axis")


def _align_rows(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """Expand (1, M) / (R, N) row tensors to a common row count, contiguous."""
    rows = max(a.shape[0], b.shape[0])
    return a.expand(rows, -1).contiguous(), b.expand(rows, -1).contiguous()


class BrownianMotion(abc.ABC):
    """One Brownian sample path per batch element on [t0, t1], queryable at any times.

    Attributes: t0, t1 (floats), shape (*batch, W), dtype, device.
    """

    t0: float
    t1: float
    shape: tuple[int, ...]
    dtype: torch.dtype
    device: torch.device

    @abc.abstractmethod
    def increments(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """Increments and space-time Levy areas of consecutive intervals of a grid.

        t: (N,) shared grid or (*batch, N) per-sequence grids inside [t0, t1].
        Returns (dW, H), both (*batch, N-1, W): dW_k = W(t_{k+1}) - W(t_k) and
        H_k = (1/h_k) int (W(r) - W(t_k)) dr - dW_k / 2 (zero where h_k = 0).
        """

    @abc.abstractmethod
    def value(self, t: Tensor) -> Tensor:
        """W(t) - W(t0) on a grid t (N,) or (*batch, N): returns (*batch, N, W)."""

    @abc.abstractmethod
    def rows(self, index: Tensor | Sequence[int]) -> BrownianMotion:
        """The path of the given rows of a path with batch shape (B,)."""

    def __call__(self, ta: Tensor | float, tb: Tensor | float) -> Tensor:
        """W(tb) - W(ta): (*batch, W). ta, tb: floats, or (*batch,) tensors per sequence."""
        ta = torch.as_tensor(ta, dtype=self.dtype, device=self.device)
        tb = torch.as_tensor(tb, dtype=self.dtype, device=self.device)
        ta, tb = torch.broadcast_tensors(ta, tb)
        return self.increments(torch.stack([ta, tb], dim=-1))[0].squeeze(-2)

    def _time_dtype(self) -> torch.dtype:
        """The dtype query times are read in."""
        return self.dtype

    def _prepare(self, t: Tensor) -> Tensor:
        """Checked query times as (R, N) rows: R = 1 for a shared grid, else R = B."""
        t = torch.as_tensor(t, device=self.device).to(self._time_dtype())
        _check_grid(t, self.shape)
        if t.min() < self.t0 or t.max() > self.t1:
            raise DataError(f"query times must lie in [{self.t0}, {self.t1}], "
                            f"got [{t.min().item()}, {t.max().item()}]")
        return t.reshape(1, -1) if t.dim() == 1 else t.reshape(math.prod(self.shape[:-1]), -1)


class BrownianPath(BrownianMotion):
    """One Brownian sample path per batch element on [t0, t1], queryable at any times.

    shape: (*batch, W) shape of W(t). dtype/device: of the path. seed: makes the path
    reproducible for a given sequence of queries (the law is exact whatever the order).

    The knot times are stored as (R, M) with R = 1 while every query used one grid for
    the whole batch and R = B after a per-sequence query; duplicated knots (zero-length
    intervals, holding zero increment and zero area) let rows keep equal knot counts.
    """

    def __init__(self, t0: float, t1: float, shape: Sequence[int], *,
                 dtype: torch.dtype = torch.float64, device: torch.device | str | None = None,
                 seed: int | None = None, generator: torch.Generator | None = None):
        t0, t1 = float(t0), float(t1)
        if not (math.isfinite(t0) and math.isfinite(t1) and t1 > t0):
            raise DataError(f"BrownianPath needs finite t0 < t1, got t0={t0}, t1={t1}")
        shape = tuple(int(s) for s in shape)
        if len(shape) < 1 or min(shape) < 1:
            raise DataError(f"shape must be (*batch, W) with positive sizes, got {shape}")
        self.t0, self.t1, self.shape = t0, t1, shape
        self.dtype = dtype
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        if generator is None:
            generator = torch.Generator(device=self.device)
            generator.manual_seed(seed if seed is not None else int(torch.seed() % 2**62))
        self._gen = generator
        self._B = math.prod(shape[:-1])
        self._W = shape[-1]
        h = t1 - t0
        self._ts = torch.tensor([[t0, t1]], dtype=dtype, device=self.device)  # (R, M)
        self._dw = self._randn(1) * math.sqrt(h)  # (B, M-1, W)
        self._area = self._randn(1) * math.sqrt(h / 12.0)  # (B, M-1, W)

    # ---------------------------------------------------------------- queries
    def increments(self, t: Tensor) -> tuple[Tensor, Tensor]:
        q = self._prepare(t)  # (R', N)
        self._refine(q)
        w_at, iw_at = self._cumulative(q)  # (B, N, W) each
        dw = torch.diff(w_at, dim=1)
        h = torch.diff(q, dim=-1).unsqueeze(-1)  # (R', N-1, 1)
        # int_a^b (W(r) - W(a)) dr from the cumulative integral of W.
        k = torch.diff(iw_at, dim=1) - h * w_at[:, :-1]
        safe_h = torch.where(h > 0, h, torch.ones_like(h))
        area = torch.where(h > 0, k / safe_h - 0.5 * dw, torch.zeros_like(dw))
        out = (*self.shape[:-1], q.shape[-1] - 1, self._W)
        return dw.reshape(out), area.reshape(out)

    def value(self, t: Tensor) -> Tensor:
        q = self._prepare(t)
        self._refine(q)
        w_at, _ = self._cumulative(q)
        return w_at.reshape(*self.shape[:-1], q.shape[-1], self._W)

    def rows(self, index: Tensor | Sequence[int]) -> BrownianPath:
        """A path made of the given rows of a path with batch shape (B,): the same
        stored knots, so queries already answered return identical values."""
        if len(self.shape) != 2:
            raise DataError("rows() needs a path with shape (B, W)")
        index = torch.as_tensor(index, dtype=torch.long, device=self.device).reshape(-1)
        new = BrownianPath.__new__(BrownianPath)
        new.__dict__.update(self.__dict__)
        new.shape = (int(index.numel()), self._W)
        new._B = new.shape[0]
        new._ts = self._ts if self._ts.shape[0] == 1 else self._ts[index]
        new._dw, new._area = self._dw[index], self._area[index]
        # A fresh generator for the child's own refinements, derived without consuming
        # the parent's stream (so calling rows() never changes the parent path).
        child_seed = (self._gen.initial_seed() * 1_000_003 + 7919 * int(index.sum()) + 1) % 2**62
        new._gen = torch.Generator(device=self.device)
        new._gen.manual_seed(child_seed)
        return new

    # --------------------------------------------------------------- internals
    def _randn(self, n: int) -> Tensor:
        return torch.randn(self._B, n, self._W, generator=self._gen, dtype=self.dtype,
                           device=self.device)

    def _new_times(self, q: Tensor) -> Tensor | None:
        """Query times not yet knots, padded per row with t0 (a harmless duplicate)."""
        ts, q = _align_rows(self._ts, q)
        pos = torch.searchsorted(ts, q).clamp_max(ts.shape[-1] - 1)
        present = ts.gather(-1, pos) == q
        if bool(present.all()):
            return None
        cand = torch.where(present, torch.full_like(q, math.inf), q).sort(dim=-1).values
        kmax = int((~present).sum(-1).max())
        cand = cand[:, :kmax]
        return torch.where(torch.isinf(cand), torch.full_like(cand, self.t0), cand)

    def _refine(self, q: Tensor) -> None:
        """Insert the query times as knots, sampling the new pieces conditionally."""
        new = self._new_times(q)
        if new is None:
            return
        ts = self._ts
        rows = max(ts.shape[0], new.shape[0])
        ts, new = ts.expand(rows, -1), new.expand(rows, -1)
        merged, order = torch.cat([ts, new], dim=-1).sort(dim=-1, stable=True)  # (R, M+K)
        is_old = order < ts.shape[-1]
        # Parent (old) interval of each new elementary interval: old knots at or before it.
        parent = (is_old.long().cumsum(-1) - 1)[:, :-1].clamp(0, ts.shape[-1] - 2)  # (R, M+K-1)
        h = torch.diff(merged, dim=-1)  # (R, M+K-1)
        mid = 0.5 * (merged[:, 1:] + merged[:, :-1])
        s_p, u_p = ts.gather(-1, parent), ts.gather(-1, parent + 1)
        h_p = u_p - s_p
        safe_hp = torch.where(h_p > 0, h_p, torch.ones_like(h_p))
        n_el = h.shape[-1]
        dw_free = self._randn(n_el) * h.clamp_min(0).sqrt().unsqueeze(-1)  # (B, n_el, W)
        area_free = self._randn(n_el) * (h.clamp_min(0) / 12).sqrt().unsqueeze(-1)
        c_dw = ((0.5 * (s_p + u_p) - mid) / safe_hp).unsqueeze(-1)  # d H_parent / d dW_i
        c_area = (h / safe_hp).unsqueeze(-1)  # d H_parent / d H_i
        idx = parent.unsqueeze(-1).expand(self._B, -1, self._W)
        zeros = torch.zeros_like(self._dw)
        sum_dw = zeros.scatter_add(1, idx, dw_free)
        sum_area = zeros.scatter_add(1, idx, c_dw * dw_free + c_area * area_free)
        # Matheron's rule: x | y = x_free + Cov(x, y) Cov(y)^{-1} (y - y_free), where
        # y = (dW, H) of the parent has Cov(y) = diag(h_p, h_p / 12).
        r_dw = (self._dw - sum_dw).gather(1, idx)
        r_area = (self._area - sum_area).gather(1, idx)
        hh = h.unsqueeze(-1)
        self._dw = dw_free + hh * (r_dw / safe_hp.unsqueeze(-1) + 12.0 * c_dw * r_area
                                   / safe_hp.unsqueeze(-1))
        self._area = area_free + c_area.pow(2) * r_area
        self._ts = merged

    def _cumulative(self, q: Tensor) -> tuple[Tensor, Tensor]:
        """W(q) - W(t0) and int_{t0}^q (W(r) - W(t0)) dr at query times: (B, N, W) each."""
        ts = self._ts
        h = torch.diff(ts, dim=-1).unsqueeze(-1)  # (R, M-1, 1)
        w_knot = torch.cat([torch.zeros_like(self._dw[:, :1]), self._dw.cumsum(1)], dim=1)
        k = h * (self._area + 0.5 * self._dw)  # int over each piece of W(r) - W(s)
        iw_knot = torch.cat([torch.zeros_like(k[:, :1]), (h * w_knot[:, :-1] + k).cumsum(1)],
                            dim=1)
        ts, q = _align_rows(ts, q)
        pos = torch.searchsorted(ts, q)  # exact knots after refine
        idx = pos.expand(self._B, -1).unsqueeze(-1).expand(-1, -1, self._W)
        return w_knot.gather(1, idx), iw_knot.gather(1, idx)
