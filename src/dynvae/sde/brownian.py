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


def _take(x: Tensor, idx: Tensor) -> Tensor:
    """x[..., b, idx[r], :] along the piece axis: x (..., B, M, W), idx (R, n) with R = 1
    (one index list for every row, a plain index_select) or R = B."""
    if idx.shape[0] == 1:
        return x.index_select(-2, idx[0])
    full = idx.unsqueeze(-1).expand(*x.shape[:-3], x.shape[-3], -1, x.shape[-1])
    return x.gather(-2, full)


def _put_add(x: Tensor, idx: Tensor, src: Tensor) -> Tensor:
    """x with src (..., B, n, W) added at the piece positions idx (R, n), as in _take."""
    if idx.shape[0] == 1:
        return x.index_add(-2, idx[0], src)
    full = idx.unsqueeze(-1).expand(*src.shape[:-3], src.shape[-3], -1, src.shape[-1])
    return x.scatter_add(-2, full, src)


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
        # (dW, H) of the M-1 pieces between knots: (2, B, capacity, W), the first M-1
        # of the capacity used; _dw and _area are views (B, M-1, W) of it.
        self._store(torch.stack([self._randn(1) * math.sqrt(h),
                                 self._randn(1) * math.sqrt(h / 12.0)]))

    # ---------------------------------------------------------------- queries
    def increments(self, t: Tensor) -> tuple[Tensor, Tensor]:
        q = self._prepare(t)  # (R', N)
        self._refine(q)
        w_at, iw_at = self._cumulative(q, local=True)  # (B, N, W) each
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
        new._store(torch.stack([self._dw[index], self._area[index]]))
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
        """Insert the query times as knots, sampling the new pieces conditionally.

        Only the stored intervals that a new knot splits are resampled: an interval
        left whole keeps its (dW, H) and draws no random numbers, so a query costs
        random draws and arithmetic in proportion to the pieces it creates (plus moving
        the pieces after them; see _insert_shared).
        """
        new = self._new_times(q)
        if new is None:
            return
        ts = self._ts
        rows = max(ts.shape[0], new.shape[0])
        ts, new = ts.expand(rows, -1), new.expand(rows, -1)
        merged, order = torch.cat([ts, new], dim=-1).sort(dim=-1, stable=True)  # (R, E+1)
        is_old = order < ts.shape[-1]
        # Parent (old) interval of each new elementary interval: old knots at or before it.
        parent = (is_old.long().cumsum(-1) - 1)[:, :-1].clamp(0, ts.shape[-1] - 2)  # (R, E)
        h = torch.diff(merged, dim=-1)  # (R, E)
        s_p, u_p = ts.gather(-1, parent), ts.gather(-1, parent + 1)
        h_p = u_p - s_p
        B, W = self._B, self._W
        # A piece that is its whole parent keeps the parent's (dW, H); a piece of zero
        # length holds zeros; the rest (0 < h < h_p) are drawn below.
        whole = (h == h_p) & (h > 0)  # (R, E)
        active = (h > 0) & (h < h_p)
        n_act = int(active.sum(-1).max())
        if n_act > 0:
            # The active pieces of each row, first, in time order; the slots past a
            # row's count hold other pieces of that row, written back unchanged.
            sel = torch.sort((~active).to(torch.int8), dim=-1, stable=True).indices[:, :n_act]
            ok = active.gather(-1, sel)
            h_a = torch.where(ok, h.gather(-1, sel), torch.zeros_like(h[:, :1]))  # (R, n)
            par_a = parent.gather(-1, sel)
            mid_a = 0.5 * (merged.gather(-1, sel) + merged.gather(-1, sel + 1))
            sp_a, up_a = s_p.gather(-1, sel), u_p.gather(-1, sel)
            hp_a = torch.where(ok, up_a - sp_a, torch.ones_like(h_a))
            dw_free = self._randn(n_act) * h_a.sqrt().unsqueeze(-1)  # (B, n, W)
            area_free = self._randn(n_act) * (h_a / 12).sqrt().unsqueeze(-1)
            c_dw = ((0.5 * (sp_a + up_a) - mid_a) / hp_a).unsqueeze(-1)  # dH_parent/d dW_i
            c_area = (h_a / hp_a).unsqueeze(-1)  # dH_parent / dH_i
            # Per split parent: its (dW, H) minus the sums its free pieces imply (summed
            # over the split parents only, numbered compactly).
            _, local = torch.unique(par_a, return_inverse=True)
            n_par = int(local.max()) + 1
            local = local.expand(rows, -1)
            zeros = torch.zeros(2, B, n_par, W, dtype=self.dtype, device=self.device)
            implied = torch.stack([dw_free, c_dw * dw_free + c_area * area_free])
            sums = _take(_put_add(zeros, local, implied), local)
            r_dw, r_area = (_take(self._buf[:, :, :self._dw.shape[1]], par_a) - sums).unbind(0)
            # Matheron's rule: x | y = x_free + Cov(x, y) Cov(y)^{-1} (y - y_free), where
            # y = (dW, H) of the parent has Cov(y) = diag(h_p, h_p / 12).
            hh, hpp = h_a.unsqueeze(-1), hp_a.unsqueeze(-1)
            dw_a = dw_free + hh * (r_dw / hpp + 12.0 * c_dw * r_area / hpp)
            area_a = area_free + c_area.pow(2) * r_area
        if rows == 1:
            self._insert_shared(whole[0], parent[0], h[0], sel[0] if n_act > 0 else None,
                                (dw_a, area_a) if n_act > 0 else None)
        else:
            keep = whole.unsqueeze(-1)
            idx = parent.unsqueeze(-1).expand(B, -1, W)
            zero = torch.zeros((), dtype=self.dtype, device=self.device)
            new_dw = torch.where(keep, self._dw.gather(1, idx), zero)
            new_area = torch.where(keep, self._area.gather(1, idx), zero)
            if n_act > 0:
                sidx = sel.unsqueeze(-1).expand(B, -1, W)
                okw = ok.unsqueeze(-1).expand(B, -1, W)
                new_dw = new_dw.scatter(1, sidx, torch.where(okw, dw_a, new_dw.gather(1, sidx)))
                new_area = new_area.scatter(
                    1, sidx, torch.where(okw, area_a, new_area.gather(1, sidx)))
            self._store(torch.stack([new_dw, new_area]))
        self._ts = merged

    def _store(self, buf: Tensor, n: int | None = None) -> None:
        """Hold buf (2, B, capacity, W), whose first n (default all) pieces are the
        path's (dW, H); _dw and _area are views (B, n, W) of them."""
        n = buf.shape[2] if n is None else n
        self._buf = buf
        self._dw, self._area = buf[0, :, :n], buf[1, :, :n]

    def _insert_shared(self, whole: Tensor, parent: Tensor, h: Tensor, sel: Tensor | None,
                       drawn: tuple[Tensor, Tensor] | None) -> None:
        """Write the refined pieces of a path with one knot grid for the whole batch.

        whole, parent, h: (E,) per new piece; sel: (n,) positions of the drawn pieces
        and drawn: their (dW, H), (B, n, W) each. Pieces before the first change stay
        where they are; the rest are written in place into spare capacity (grown by
        doubling), so queries moving forward in time copy only what follows them.
        """
        B, W = self._B, self._W
        n_el, n_old = int(h.shape[0]), int(self._dw.shape[1])
        pos = torch.arange(n_el, device=self.device)
        changed = (~(whole & (parent == pos))).nonzero().squeeze(-1)
        p0 = int(changed[0])
        tail = torch.empty(2, B, n_el - p0, W, dtype=self.dtype, device=self.device)
        old = self._buf[:, :, p0:n_old]
        w_pos = whole[p0:].nonzero().squeeze(-1)  # positions in the tail
        src = parent[p0:][w_pos] - p0  # positions in the old suffix
        # Whole pieces come in runs contiguous in both layouts: copy them as slices
        # unless there are many runs.
        brk = ((torch.diff(w_pos) != 1) | (torch.diff(src) != 1)).nonzero().squeeze(-1)
        if brk.numel() < 64:
            cuts = (brk + 1).tolist()
            for a, b in zip([0, *cuts], [*cuts, int(w_pos.numel())], strict=True):
                if b > a:
                    d0, s0 = int(w_pos[a]), int(src[a])
                    tail[:, :, d0:d0 + b - a].copy_(old[:, :, s0:s0 + b - a])
        else:
            tail.index_copy_(2, w_pos, old.index_select(2, src))
        tail.index_fill_(2, (h[p0:] <= 0).nonzero().squeeze(-1), 0.0)
        if drawn is not None:
            tail.index_copy_(2, sel - p0, torch.stack(drawn))
        if self._buf.shape[2] < n_el:
            buf = torch.empty(2, B, max(n_el, 2 * self._buf.shape[2]), W, dtype=self.dtype,
                              device=self.device)
            buf[:, :, :p0].copy_(self._buf[:, :, :p0])
        else:
            buf = self._buf
        buf[:, :, p0:n_el].copy_(tail)
        self._store(buf, n_el)

    def _cumulative(self, q: Tensor, local: bool = False) -> tuple[Tensor, Tensor]:
        """W(q) - W(t0) and int_{t0}^q (W(r) - W(t0)) dr at query times: (B, N, W) each.

        local: measure both from the first queried knot a instead of t0 (W(q) - W(a)
        and int_a^q (W(r) - W(a)) dr), summing only the knots the query spans;
        increments and areas of the query grid are the same either way.
        """
        ts, q = _align_rows(self._ts, q)
        pos = torch.searchsorted(ts, q)  # exact knots after refine
        dw, area = self._dw, self._area
        if local:
            lo, hi = int(pos.min()), int(pos.max())
            ts, pos = ts[:, lo:hi + 1], pos - lo
            dw, area = dw[:, lo:hi], area[:, lo:hi]
        h = torch.diff(ts, dim=-1).unsqueeze(-1)  # (R, M-1, 1)
        w_knot = torch.cat([torch.zeros_like(dw[:, :1]), dw.cumsum(1)], dim=1)
        k = h * (area + 0.5 * dw)  # int over each piece of W(r) - W(s)
        iw_knot = torch.cat([torch.zeros_like(k[:, :1]), (h * w_knot[:, :-1] + k).cumsum(1)],
                            dim=1)
        both = _take(torch.stack([w_knot, iw_knot]), pos)
        return both[0], both[1]
