"""The recursions of the scalar-observation Kalman filter and smoother in C, as
differentiable torch functions (dynvae.ssm.scalar uses them when the C code compiles).

Forward and backward passes are plain C loops (``_native/scalar.c``) over N independent
models and T steps, in float64: the Riccati pass (predict, scalar gain, Joseph update),
the linear recursion v_t = F_t v_{t-1} + c_t (forward or reverse) and the smoothed
covariance recursion P_t = G_t P_{t+1} G_t^T + D_t. Each backward pass is the exact
reverse-mode derivative of its forward recursion, so gradients equal autograd's through
the torch loops up to round-off. Results and gradients are cast back to the inputs' dtype.
"""

from __future__ import annotations

import ctypes
from functools import lru_cache
from pathlib import Path

import torch
from torch import Tensor

from dynvae.errors import DataError
from dynvae.utils import broadcast_shapes

_SOURCE = Path(__file__).with_name("_native") / "scalar.c"
S_MAX_NATIVE = 16   # MAXS of scalar.c


@lru_cache(maxsize=1)
def _library() -> ctypes.CDLL:
    from dynvae.ssm import native
    lib = native.compiled_library(_SOURCE)
    i64, ptr = ctypes.c_int64, ctypes.c_void_p
    lib.dynvae_riccati_forward.restype = ctypes.c_int
    lib.dynvae_riccati_forward.argtypes = [i64, i64, ctypes.c_int, *([ptr] * 11)]
    lib.dynvae_riccati_backward.restype = ctypes.c_int
    lib.dynvae_riccati_backward.argtypes = [i64, i64, ctypes.c_int, *([ptr] * 19)]
    i32 = ctypes.c_int
    lib.dynvae_linrec_forward.argtypes = [i64, i64, i32, i32, *([ptr] * 4)]
    lib.dynvae_linrec_backward.argtypes = [i64, i64, i32, i32, *([ptr] * 6)]
    lib.dynvae_quadrec_forward.argtypes = [i64, i64, i32, *([ptr] * 4)]
    lib.dynvae_quadrec_backward.argtypes = [i64, i64, i32, *([ptr] * 6)]
    for name in ("linrec_forward", "linrec_backward", "quadrec_forward", "quadrec_backward"):
        getattr(lib, f"dynvae_{name}").restype = None
    return lib


def native_scalar_available() -> bool:
    """True when the C recursions compile (or are cached) and load here."""
    from dynvae.ssm.native import NativeUnavailable
    try:
        _library()
    except NativeUnavailable:
        return False
    return True


def _f64(v: Tensor, shape: tuple[int, ...]) -> Tensor:
    return v.detach().to(torch.float64).expand(shape).contiguous()


def _ptr(v: Tensor | None):
    return None if v is None else v.data_ptr()


class _Riccati(torch.autograd.Function):
    """(A, Q, h, r, P0, obs) with shapes (N, T, S, S), (N, T, S, S), (N, T, S), (N, T),
    (N, S, S), (N, T) -> Pp, Pf (N, T, S, S), s (N, T), K (N, T, S)."""

    @staticmethod
    def forward(ctx, A, Q, h, r, P0, obs):
        N, T, S = A.shape[0], A.shape[1], A.shape[-1]
        args = (_f64(A, (N, T, S, S)), _f64(Q, (N, T, S, S)), _f64(h, (N, T, S)),
                _f64(r, (N, T)), _f64(P0, (N, S, S)))
        mask = obs.to(torch.uint8).expand(N, T).contiguous()
        f64 = dict(dtype=torch.float64)
        Pp, Pf = torch.empty(N, T, S, S, **f64), torch.empty(N, T, S, S, **f64)
        s, K = torch.empty(N, T, **f64), torch.empty(N, T, S, **f64)
        err = (ctypes.c_int64 * 2)()
        rc = _library().dynvae_riccati_forward(N, T, S, *(_ptr(a) for a in args),
                                               mask.data_ptr(), Pp.data_ptr(), Pf.data_ptr(),
                                               s.data_ptr(), K.data_ptr(), err)
        if rc:
            raise DataError(f"scalar Kalman filter (C): the innovation variance h^T P h + r "
                            f"is not positive at model {err[0]}, step {err[1]}")
        ctx.save_for_backward(*args, mask, Pp, Pf, s, K)
        ctx.set_materialize_grads(False)
        ctx.dtype = A.dtype
        return Pp.to(A.dtype), Pf.to(A.dtype), s.to(A.dtype), K.to(A.dtype)

    @staticmethod
    def backward(ctx, gPp, gPf, gs, gK):
        A, Q, h, r, P0, mask, Pp, Pf, s, K = ctx.saved_tensors
        N, T, S = A.shape[0], A.shape[1], A.shape[-1]
        grads = [None if g is None else _f64(g, v.shape)
                 for g, v in zip((gPp, gPf, gs, gK), (Pp, Pf, s, K), strict=True)]
        out = [torch.empty_like(v) for v in (A, Q, h, r, P0)]
        rc = _library().dynvae_riccati_backward(
            N, T, S, *(_ptr(a) for a in (A, Q, h, r, P0, mask, Pp, Pf, s, K)),
            *(_ptr(g) for g in grads), *(_ptr(o) for o in out))
        if rc:
            raise DataError(f"scalar Kalman filter (C): backward pass failed (error {rc})")
        return (*(o.to(ctx.dtype) for o in out), None)


def native_riccati(A: Tensor, Q: Tensor, h: Tensor, r: Tensor, P0: Tensor, obs: Tensor
                   ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The Riccati pass of :func:`dynvae.ssm.scalar._covariances` in C, any batch dims:
    A, Q (*b, T, S, S), h (*b, T, S), r (*b, T), P0 (*b, S, S), obs (*b, T) bool."""
    batch, T, S = A.shape[:-3], A.shape[-3], A.shape[-1]
    N = int(torch.Size(batch).numel())
    flat = (A.reshape(N, T, S, S), Q.reshape(N, T, S, S), h.reshape(N, T, S),
            r.reshape(N, T), P0.reshape(N, S, S), obs.reshape(N, T))
    Pp, Pf, s, K = _Riccati.apply(*flat)
    return (Pp.reshape(*batch, T, S, S), Pf.reshape(*batch, T, S, S), s.reshape(*batch, T),
            K.reshape(*batch, T, S))


def _flat(v: Tensor, batch: torch.Size, event: tuple[int, ...]) -> Tensor:
    return v.expand(*batch, *event).reshape(-1, *event)


class _LinearRecursion(torch.autograd.Function):
    """(F (N, T, S, S), c (N, T, S), first (N, S), reverse) -> v (N, T, S)."""

    @staticmethod
    def forward(ctx, F, c, first, reverse):
        N, T, S = c.shape
        F64, c64, first64 = _f64(F, (N, T, S, S)), _f64(c, (N, T, S)), _f64(first, (N, S))
        v = torch.empty(N, T, S, dtype=torch.float64)
        _library().dynvae_linrec_forward(N, T, S, int(reverse), F64.data_ptr(), c64.data_ptr(),
                                         first64.data_ptr(), v.data_ptr())
        ctx.save_for_backward(F64, v)
        ctx.reverse, ctx.dtype = reverse, c.dtype
        return v.to(c.dtype)

    @staticmethod
    def backward(ctx, gv):
        F, v = ctx.saved_tensors
        N, T, S = v.shape
        gF, gc, gfirst = torch.empty_like(F), torch.empty_like(v), torch.empty(N, S,
                                                                            dtype=v.dtype)
        _library().dynvae_linrec_backward(N, T, S, int(ctx.reverse), F.data_ptr(),
                                          v.data_ptr(), _f64(gv, v.shape).data_ptr(),
                                          gF.data_ptr(), gc.data_ptr(), gfirst.data_ptr())
        return gF.to(ctx.dtype), gc.to(ctx.dtype), gfirst.to(ctx.dtype), None


class _QuadraticRecursion(torch.autograd.Function):
    """(G (N, T, S, S), D (N, T, S, S), last (N, S, S)) -> P (N, T, S, S)."""

    @staticmethod
    def forward(ctx, G, D, last):
        N, T, S = G.shape[0], G.shape[1], G.shape[-1]
        G64, D64, last64 = _f64(G, G.shape), _f64(D, G.shape), _f64(last, (N, S, S))
        P = torch.empty(N, T, S, S, dtype=torch.float64)
        _library().dynvae_quadrec_forward(N, T, S, G64.data_ptr(), D64.data_ptr(),
                                          last64.data_ptr(), P.data_ptr())
        ctx.save_for_backward(G64, P)
        ctx.dtype = G.dtype
        return P.to(G.dtype)

    @staticmethod
    def backward(ctx, gP):
        G, P = ctx.saved_tensors
        N, T, S = G.shape[0], G.shape[1], G.shape[-1]
        gG, gD, glast = torch.empty_like(G), torch.empty_like(G), torch.empty(N, S, S,
                                                                          dtype=G.dtype)
        _library().dynvae_quadrec_backward(N, T, S, G.data_ptr(), P.data_ptr(),
                                           _f64(gP, P.shape).data_ptr(), gG.data_ptr(),
                                           gD.data_ptr(), glast.data_ptr())
        return gG.to(ctx.dtype), gD.to(ctx.dtype), glast.to(ctx.dtype)


def native_linear_recursion(F: Tensor, c: Tensor, first: Tensor, reverse: bool) -> Tensor:
    """:func:`dynvae.ssm.scalar._linear_recursion` in C: F (*b, T, S, S), c (*b, T, S),
    first (*b, S) -> (*b, T, S)."""
    batch = broadcast_shapes(F.shape[:-3], c.shape[:-2], first.shape[:-1])
    T, S = c.shape[-2:]
    v = _LinearRecursion.apply(_flat(F, batch, (T, S, S)), _flat(c, batch, (T, S)),
                               _flat(first, batch, (S,)), reverse)
    return v.reshape(*batch, T, S)


def native_quadratic_recursion(G: Tensor, D: Tensor, last: Tensor) -> Tensor:
    """P_{T-1} = last, P_t = G_t P_{t+1} G_t^T + D_t in C: G, D (*b, T, S, S) (entry T-1
    unused), last (*b, S, S) -> (*b, T, S, S)."""
    batch = broadcast_shapes(G.shape[:-3], D.shape[:-3], last.shape[:-2])
    T, S = G.shape[-3], G.shape[-1]
    P = _QuadraticRecursion.apply(_flat(G, batch, (T, S, S)), _flat(D, batch, (T, S, S)),
                                  _flat(last, batch, (S, S)))
    return P.reshape(*batch, T, S, S)
