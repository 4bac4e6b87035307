"""Kalman filter and RTS smoother in O(log T) depth by associative scans.

Implements Särkkä & García-Fernández (2021), "Temporal parallelization of Bayesian
smoothers", IEEE TAC 66(1), Sec. IV (filter elements and operator, eqs. 19-24 and
Lemma 8) and Sec. V (smoother elements and operator, Lemma 10). Outputs equal
those of :func:`dynvae.ssm.kalman_filter` and :func:`dynvae.ssm.rts_smoother`
(same result types, masks, time-varying parameters, inputs and batch dims).

Inside, tensors are time-major, (T, *batch, ...), so that the scan runs along dim 0.
How the combine steps are evaluated is a strategy object (:class:`ScanMethod`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from functools import partial

import torch
from torch import Tensor

from dynvae.gaussian import (
    batched_mv,
    condition_on_observation,
    innovation_log_lik,
    joseph_cov,
    kalman_gain,
    mask_observation,
    symmetrize,
)
from dynvae.ssm.guard import balancing_scales, check_filter, check_smoother
from dynvae.ssm.kalman import FilterResult, SmootherResult, check_inputs, smoother_gain
from dynvae.ssm.model import _EVENT_DIMS, LinearGaussianSSM
from dynvae.ssm.scan import Combine, Elements, associative_scan
from dynvae.ssm.smallmat import BatchedLinalg, ScalarLinalg, SmallLinalg
from dynvae.utils import broadcast_shapes


def filter_combine(ops: SmallLinalg, earlier: Elements, later: Elements) -> Elements:
    """Filtering operator (A, b, C, eta, J)_i ⊗ (A, b, C, eta, J)_j, Lemma 8 of the paper.

    With N = I + J_j C_i, one solve N^{-1} [A_j^T, eta_j - J_j b_i, J_j A_i] gives
    M = A_j (I + C_i J_j)^{-1} (its transpose, as J_j, C_i are symmetric) and the
    information terms. Matrices and vectors are in the representation of ``ops``.
    """
    Ai, bi, Ci, etai, Ji = earlier
    Aj, bj, Cj, etaj, Jj = later
    S = ops.dim(Ai)
    rhs = ops.hcat([ops.t(Aj), ops.as_column(ops.sub(etaj, ops.mv(Jj, bi))), ops.mm(Jj, Ai)])
    X = ops.solve(ops.eye_plus(ops.mm(Jj, Ci)), rhs)                     # (S, 2S+1)
    M = ops.t(ops.columns(X, 0, S))
    AiT = ops.t(Ai)
    return (ops.mm(M, Ai),
            ops.add(ops.mv(M, ops.add(bi, ops.mv(Ci, etaj))), bj),
            ops.sym(ops.add(ops.mm(ops.mm(M, Ci), ops.t(Aj)), Cj)),
            ops.add(ops.mv(AiT, ops.column(X, S)), etai),
            ops.sym(ops.add(ops.mm(AiT, ops.columns(X, S + 1, 2 * S + 1)), Ji)))


def smoother_combine(ops: SmallLinalg, earlier: Elements, later: Elements) -> Elements:
    """Smoothing operator (E, g, L)_i ⊗ (E, g, L)_j, Lemma 10: the backward map
    z_i = E_i z_j + g_i + noise(L_i) composed with the one of the later element."""
    Ei, gi, Li = earlier
    Ej, gj, Lj = later
    return (ops.mm(Ei, Ej), ops.add(ops.mv(Ei, gj), gi),
            ops.sym(ops.add(ops.mm(ops.mm(Ei, Lj), ops.t(Ei)), Li)))


class ScanMethod(ABC):
    """Strategy: how the associative scans of the filter and smoother are evaluated."""

    @abstractmethod
    def scan_filter(self, elems: Elements) -> Elements:
        """Forward scan of filter elements (A, b, C, eta, J), each (T, *B, ...)."""

    @abstractmethod
    def scan_smoother(self, elems: Elements) -> Elements:
        """Reverse scan of smoother elements (E, g, L), each (T, *B, ...)."""


class EagerScan(ScanMethod):
    """Plain eager torch with batched library calls; any state size, any device."""

    def __init__(self, ops: SmallLinalg | None = None) -> None:
        self.ops = ops if ops is not None else BatchedLinalg()

    def scan_filter(self, elems: Elements) -> Elements:
        return associative_scan(partial(filter_combine, self.ops), elems)

    def scan_smoother(self, elems: Elements) -> Elements:
        return associative_scan(partial(smoother_combine, self.ops), elems, reverse=True)


def _pack(elems: Elements, batch_ndim: int) -> Tensor:
    """Elements (T, *B, *event) -> one contiguous (T, prod(B), P) tensor."""
    return torch.cat([e.reshape(*e.shape[:1 + batch_ndim], -1).flatten(1, batch_ndim)
                      if batch_ndim else e.reshape(e.shape[0], 1, -1) for e in elems], -1)


def _unpack(packed: Tensor, shapes: list[tuple[int, ...]]) -> Elements:
    """Inverse of :func:`_pack` for per-element event ``shapes``: (T, M, P) -> (T, M, *ev)."""
    sizes = [int(torch.Size(s).numel()) for s in shapes]
    parts = torch.split(packed, sizes, -1)
    return tuple(p.reshape(*p.shape[:2], *s) for p, s in zip(parts, shapes, strict=True))


def _rows_to_nested(rows: Tensor, shapes: list[tuple[int, ...]]) -> Elements:
    """(P, N) structure-of-arrays rows -> nested lists of (N,) tensors per element."""
    out, offset = [], 0
    for shape in shapes:
        if len(shape) == 1:
            out.append([rows[offset + i] for i in range(shape[0])])
        else:
            out.append([[rows[offset + i * shape[1] + j] for j in range(shape[1])]
                        for i in range(shape[0])])
        offset += int(torch.Size(shape).numel())
    return tuple(out)


def _nested_to_rows(elems: Elements) -> Tensor:
    flat = [e for el in elems for row in el for e in (row if isinstance(row, list) else [row])]
    return torch.stack(flat, 0)                                           # (P, N)


def _soa_filter_combine(shapes: list[tuple[int, ...]]):
    def soa_filter(earlier: Tensor, later: Tensor) -> Tensor:
        return _nested_to_rows(filter_combine(ScalarLinalg(), _rows_to_nested(earlier, shapes),
                                              _rows_to_nested(later, shapes)))
    return soa_filter


def _soa_smoother_combine(shapes: list[tuple[int, ...]]):
    def soa_smoother(earlier: Tensor, later: Tensor) -> Tensor:
        return _nested_to_rows(smoother_combine(ScalarLinalg(), _rows_to_nested(earlier, shapes),
                                                _rows_to_nested(later, shapes)))
    return soa_smoother


class CompiledScan(ScanMethod):
    """Combines written entry by entry (:class:`ScalarLinalg`) on elements packed as
    structure-of-arrays rows (P, N), fused by ``torch.compile`` into one vectorised
    kernel per scan level; for small state dims. The first call per state dim
    compiles (tens of seconds); sizes are dynamic, so all levels and lengths share
    the compiled kernels. Levels shorter than ``min_size`` run the same
    entry-by-entry combines eagerly. Needs a ``torch.compile`` back end (a C++
    compiler on CPU). See benchmarks/README.md for when it pays off.
    """

    _cache: dict[tuple, Combine] = {}

    def __init__(self, min_size: int = 64) -> None:
        self.min_size = min_size

    def _combine(self, make, shapes: list[tuple[int, ...]]) -> Combine:
        key = (make.__name__, tuple(shapes))
        if key not in self._cache:
            self._cache[key] = torch.compile(make(shapes), dynamic=True)
        compiled, eager = self._cache[key], make(shapes)
        soa = lambda e: e.reshape(-1, e.shape[-1]).transpose(0, 1).contiguous()   # (P, n M)

        def combine(earlier: Elements, later: Elements) -> Elements:
            n, M, P = earlier[0].shape
            # pairs are independent: flatten (n, M) so one compiled graph serves all sizes
            fn = eager if n < self.min_size else compiled
            out = fn(soa(earlier[0]), soa(later[0]))                       # (P, n M)
            return (out.transpose(0, 1).reshape(n, M, P),)
        return combine

    def _scan(self, make, elems: Elements, reverse: bool) -> Elements:
        batch = elems[0].shape[1:-2]                       # first element is a matrix
        shapes = [tuple(e.shape[1 + len(batch):]) for e in elems]
        combine = self._combine(make, shapes)
        (out,) = associative_scan(combine, (_pack(elems, len(batch)),), reverse=reverse)
        return tuple(o.reshape(o.shape[0], *batch, *s)
                     for o, s in zip(_unpack(out, shapes), shapes, strict=True))

    def scan_filter(self, elems: Elements) -> Elements:
        return self._scan(_soa_filter_combine, elems, reverse=False)

    def scan_smoother(self, elems: Elements) -> Elements:
        return self._scan(_soa_smoother_combine, elems, reverse=True)


def _to_time_major(v: Tensor, ev: int, batch: torch.Size) -> Tensor:
    """(*b, T, *event) -> (T, *batch, *event) broadcast view, ``ev`` event dims."""
    T = v.shape[v.ndim - ev - 1]
    v = v.movedim(v.ndim - ev - 1, 0)                                    # (T, *b, *event)
    v = v.reshape(T, *[1] * (len(batch) + ev + 1 - v.ndim), *v.shape[1:])
    return v.expand(T, *batch, *v.shape[v.ndim - ev:])


def _time_major(model: LinearGaussianSSM, name: str, T: int, batch: torch.Size) -> Tensor:
    """Parameter ``name`` as (T, *batch, ...), a broadcast view where possible."""
    return _to_time_major(model.with_time_axis(name, T), _EVENT_DIMS[name], batch)


def _batch_shape(model: LinearGaussianSSM, x: Tensor) -> torch.Size:
    shapes = [x.shape[:-2]]
    for name, ev in _EVENT_DIMS.items():
        v = getattr(model, name)
        if v is not None:
            shapes.append(v.shape[: v.ndim - ev - (name in model.time_varying)])
    return broadcast_shapes(*shapes)


class _Prepared:
    """Time-major model terms and masked observations, (T, *batch, ...)."""

    def __init__(self, model: LinearGaussianSSM, x: Tensor, mask: Tensor | None,
                 u: Tensor | None) -> None:
        mask = check_inputs(model, x, mask, u)
        T = x.shape[-2]
        self.batch = batch = _batch_shape(model, x)
        tm = lambda v, ev: _to_time_major(v, ev, batch)
        trans_off, emis_off = model.offsets(T, u)
        y = x if emis_off is None else x - emis_off
        self.y = tm(torch.where(mask, y, torch.zeros_like(y)), 1)           # (T, *B, D)
        self.mask = tm(mask, 1)                                            # (T, *B, D)
        S = model.state_dim
        self.off = (torch.zeros(T, *batch, S, dtype=x.dtype, device=x.device)
                    if trans_off is None else tm(trans_off, 1))            # (T, *B, S)
        self.A = _time_major(model, "transition_matrix", T, batch)        # (T, *B, S, S)
        self.Q = _time_major(model, "transition_cov", T, batch)
        self.H = _time_major(model, "emission_matrix", T, batch)          # (T, *B, D, S)
        self.R = _time_major(model, "emission_cov", T, batch)             # (T, *B, D, D)
        self.m0 = model.initial_mean.expand(*batch, S)
        self.P0 = model.initial_cov.expand(*batch, S, S)
        self.scale = d = balancing_scales(self.P0)                       # (*B, S)
        # z' = z / d: A' = D^{-1} A D, Q' = D^{-1} Q D^{-1}, H' = H D, offsets / d
        outer = d[..., :, None] * d[..., None, :]
        self.A = self.A * (d[..., None, :] / d[..., :, None])
        self.Q = self.Q / outer
        self.H = self.H * d[..., None, :]
        self.off = self.off / d
        self.m0, self.P0 = self.m0 / d, self.P0 / outer

    def unscale(self, mean: Tensor, cov: Tensor) -> tuple[Tensor, Tensor]:
        """Moments of z' = z / d back to z: (T, *B, S), (T, *B, S, S)."""
        d = self.scale
        return mean * d, cov * (d[..., :, None] * d[..., None, :])


def _filter_elements(p: _Prepared) -> Elements:
    """Elements (A, b, C, eta, J) of eqs. (19)-(21): each step's conditional map of
    z_t given z_{t-1} and x_t, with the information that x_t carries about z_{t-1}."""
    y, H, R, _ = mask_observation(p.y[1:], p.H[1:], p.R[1:], p.mask[1:])
    F, Q, c = p.A[1:], p.Q[1:], p.off[1:]
    K, L = kalman_gain(Q, H, R)                          # (T-1, *B, S, D), (T-1, *B, D, D)
    resid = y - batched_mv(H, c)
    HF = H @ F                                                           # (T-1, *B, D, S)
    W = torch.linalg.solve_triangular(L, HF, upper=False)                # S^{-1/2} H F
    z = torch.linalg.solve_triangular(L, resid.unsqueeze(-1), upper=False)
    A = F - K @ HF
    b = c + batched_mv(K, resid)
    C = joseph_cov(Q, K, H, R)
    eta = (W.transpose(-1, -2) @ z).squeeze(-1)
    J = symmetrize(W.transpose(-1, -2) @ W)
    # step 0: the prior conditioned on x_0, independent of any earlier state
    b0, C0, _ = condition_on_observation(p.m0, p.P0, p.y[0], p.H[0], p.R[0], p.mask[0])
    first = (torch.zeros_like(C0), b0, C0, torch.zeros_like(b0), torch.zeros_like(C0))
    return tuple(torch.cat((f.unsqueeze(0), e), 0) for f, e in zip(first, (A, b, C, eta, J),
                                                                   strict=True))


def _from_time_major(v: Tensor, ev: int) -> Tensor:
    return v.movedim(0, v.ndim - ev - 1)


def _predict_and_log_lik(p: _Prepared, fm: Tensor, fc: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Predicted moments from the filtered ones of the previous step, and log p(x)."""
    pm = torch.cat((p.m0.unsqueeze(0), batched_mv(p.A[1:], fm[:-1]) + p.off[1:]), 0)
    pc = torch.cat((p.P0.unsqueeze(0),
                    symmetrize(p.A[1:] @ fc[:-1] @ p.A[1:].transpose(-1, -2) + p.Q[1:])), 0)
    y, H, R, n_obs = mask_observation(p.y, p.H, p.R, p.mask)
    _, L = kalman_gain(pc, H, R)
    log_lik = innovation_log_lik(L, y - batched_mv(H, pm), n_obs).sum(0)     # (*B,)
    return pm, pc, log_lik


def parallel_kalman_filter(model: LinearGaussianSSM, x: Tensor, mask: Tensor | None = None,
                           u: Tensor | None = None, method: ScanMethod | None = None
                           ) -> FilterResult:
    """Kalman filter by an associative scan; same arguments and outputs as
    :func:`dynvae.ssm.kalman_filter`, plus ``method`` (default :class:`EagerScan`)."""
    method = method if method is not None else EagerScan()
    p = _Prepared(model, x, mask, u)
    _, fm, fc, _, _ = method.scan_filter(_filter_elements(p))
    pm, pc, log_lik = _predict_and_log_lik(p, fm, fc)
    (fm, fc), (pm, pc) = p.unscale(fm, fc), p.unscale(pm, pc)
    out = FilterResult(log_lik, _from_time_major(pm, 1), _from_time_major(pc, 2),
                       _from_time_major(fm, 1), _from_time_major(fc, 2))
    check_filter("parallel Kalman filter", model, _from_time_major(p.mask, 1), out)
    return out


def _smoother_elements(fm: Tensor, fc: Tensor, pm: Tensor, pc: Tensor, A: Tensor
                       ) -> tuple[Elements, Tensor]:
    """Elements (E, g, L) of the smoother scan in deviation form, and the gains.

    Lemma 10 scans z_t = G_t z_{t+1} + (m_{t|t} - G_t m_{t+1|t}) + noise; its offset
    subtracts two large, nearly equal terms when the gain is large, and products of
    gains then amplify the cancellation error (means of 1e84 on a Matérn + quasi-periodic
    GP with multi-hour gaps). The same affine recursion written for the deviations from
    the filter, d_t = m_{t|T} - m_{t|t} and D_t = P_{t|T} - P_{t|t},

        d_t = G_t d_{t+1} + G_t (m_{t+1|t+1} - m_{t+1|t}),
        D_t = G_t D_{t+1} G_t^T + G_t (P_{t+1|t+1} - P_{t+1|t}) G_t^T,

    has offsets of the size of a Kalman update instead (d_{T-1} = 0, D_{T-1} = 0).
    All tensors time-major: (T, *B, S[, S]); A holds A_t (entry t maps z_{t-1} to z_t).
    """
    G = smoother_gain(fc[:-1], pc[1:], A[1:])                            # (T-1, *B, S, S)
    Gt = G.transpose(-1, -2)
    E = torch.cat((G, torch.zeros_like(fc[:1])), 0)
    g = torch.cat((batched_mv(G, fm[1:] - pm[1:]), torch.zeros_like(fm[:1])), 0)
    L = torch.cat((symmetrize(G @ (fc[1:] - pc[1:]) @ Gt), torch.zeros_like(fc[:1])), 0)
    return (E, g, L), G


def parallel_rts_smoother(model: LinearGaussianSSM, x: Tensor, mask: Tensor | None = None,
                          u: Tensor | None = None, filtered: FilterResult | None = None,
                          method: ScanMethod | None = None) -> SmootherResult:
    """RTS smoother by a reverse associative scan (Lemma 10, in the deviation form of
    :func:`_smoother_elements`); same arguments and outputs as
    :func:`dynvae.ssm.rts_smoother`, plus ``method``."""
    method = method if method is not None else EagerScan()
    mask = check_inputs(model, x, mask, u)
    f = filtered if filtered is not None else parallel_kalman_filter(model, x, mask, u, method)
    T = f.filtered_mean.shape[-2]
    tm = lambda v, ev: v.movedim(v.ndim - ev - 1, 0)
    fm, fc = tm(f.filtered_mean, 1), tm(f.filtered_cov, 2)               # (T, *B, S[, S])
    pm, pc = tm(f.predicted_mean, 1), tm(f.predicted_cov, 2)
    batch = fm.shape[1:-1]
    A = _time_major(model, "transition_matrix", T, batch)
    # in the balanced basis z / d of the filter (see balancing_scales)
    d = balancing_scales(model.initial_cov.expand(*batch, *model.initial_cov.shape[-2:]))
    outer = d[..., :, None] * d[..., None, :]
    elems, G = _smoother_elements(fm / d, fc / outer, pm / d, pc / outer,
                                  A * (d[..., None, :] / d[..., :, None]))
    _, dm, dP = method.scan_smoother(elems)
    sm, sc = fm + dm * d, symmetrize(fc + dP * outer)
    G = G * (d[..., :, None] / d[..., None, :])                          # back to z
    cross = torch.cat((torch.zeros_like(sc[:1]), sc[1:] @ G.transpose(-1, -2)), 0)
    out = SmootherResult(f.log_likelihood, _from_time_major(sm, 1), _from_time_major(sc, 2),
                         _from_time_major(cross, 2), f)
    check_smoother("parallel RTS smoother", model, mask, out)
    return out
