"""Inference-only Kalman filter and RTS smoother in plain C, compiled on first use.

Same outputs as :func:`dynvae.ssm.kalman_filter` / :func:`dynvae.ssm.rts_smoother`
(masks, any batch dims, time-varying A/Q/H/R, biases and inputs), for long sequences
and large batches on the CPU, where the Python-level loop is slow and the associative
scan does several times the work of the sequential recursion. When the batch shares the
covariance-shaping parameters and one missingness pattern, the covariances are computed
once per step for all sequences (see docs/engines.md). The C source
(``_native/kalman.c`` and ``kalman_steps.h``, C99, no BLAS) is compiled with the system
C compiler (``$CC``, else the one Python was built with, else ``cc``/``gcc``/``clang``)
using ``-O3`` and IEEE arithmetic (no ``-ffast-math``, no ``-march=native``; ``-mavx2
-mfma`` where the CPU has them, and those flags are part of the cache key). The shared
library is cached under ``$DYNVAE_CACHE_DIR`` (default ``~/.cache/dynvae/native``), keyed
by a hash of the sources, flags, compiler version and platform, and written atomically.

No autograd: inputs that require grad are refused. Computation is in float64 on the
CPU; results are cast back to the input's dtype and device (float32 inputs are thus
filtered in float64).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shlex
import shutil
import subprocess
import sysconfig
import tempfile
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from dynvae.errors import ConfigError, DataError, NumericalError
from dynvae.ssm.guard import tolerance
from dynvae.ssm.kalman import FilterResult, SmootherResult, check_inputs
from dynvae.ssm.model import _EVENT_DIMS, LinearGaussianSSM
from dynvae.utils import broadcast_shapes

_SOURCE = Path(__file__).with_name("_native") / "kalman.c"
_HEADERS = (_SOURCE.with_name("kalman_steps.h"),)          # included by _SOURCE
_PARAMS = ("initial_mean", "initial_cov", "transition_matrix", "transition_cov",
           "emission_matrix", "emission_cov")
_ERRORS = {1: "the innovation covariance H P H^T + R is not positive definite"}
_EXPLODED = ("filtered covariance", "filtered mean", "smoothed covariance", "smoothed mean")


class NativeUnavailable(ConfigError):
    """No C compiler, or compiling the native Kalman back end failed."""


def find_c_compiler() -> list[str]:
    """The C compiler command: $CC, the one Python was built with, or cc/gcc/clang."""
    for cand in (os.environ.get("CC"), sysconfig.get_config_var("CC")):
        if cand:
            cmd = shlex.split(cand)
            if cmd and shutil.which(cmd[0]):
                return cmd
    for name in ("cc", "gcc", "clang"):
        if shutil.which(name):
            return [name]
    raise NativeUnavailable("no C compiler found (set $CC, or install gcc/clang) for the "
                            "native Kalman back end; use kalman_filter/parallel_kalman_filter")


def _cache_dir() -> Path:
    root = os.environ.get("DYNVAE_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "dynvae")
    return Path(root) / "native"


def _compile(cc: list[str], flags: list[str], target: Path, source: Path = _SOURCE) -> None:
    """Compile the C ``source`` to ``target`` through a temporary file and an atomic
    rename, so that concurrent processes never load a partial library."""
    fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=target.suffix)
    os.close(fd)
    try:
        proc = subprocess.run([*cc, *flags, str(source), "-o", tmp, "-lm"],
                              capture_output=True, text=True, timeout=300)
        if proc.returncode != 0:
            raise NativeUnavailable(f"compiling {source.name} with {cc[0]} failed "
                                    f"(exit {proc.returncode}):\n{proc.stderr.strip()}")
        os.replace(tmp, target)
    except (OSError, subprocess.SubprocessError) as err:
        raise NativeUnavailable(f"running the C compiler {cc[0]!r} failed: {err}") from err
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _simd_flags() -> list[str]:
    """-mavx2 -mfma where this x86-64 CPU has AVX2 and FMA (Linux), else nothing.

    The flags are part of the cache key, so a library built with them is only ever loaded
    where they were detected; the C code is the same either way (the compiler
    vectorises its loops over SIMD lanes for whichever instruction set it may use).
    """
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return []
    try:
        with open("/proc/cpuinfo") as f:
            words = set(next((line for line in f if line.startswith("flags")), "").split())
    except OSError:
        return []
    return ["-mavx2", "-mfma"] if {"avx2", "fma"} <= words else []


def compiled_library(source: Path, headers: tuple[Path, ...] = ()) -> ctypes.CDLL:
    """Compile the C file ``source`` of ``dynvae/ssm/_native`` (with the ``headers`` it
    includes; once per source, flags, compiler and platform; cached) and load it. Raises
    NativeUnavailable."""
    cc = find_c_compiler()
    flags = ["-O3", "-std=c99", "-fPIC", "-shared", *_simd_flags()]
    try:
        version = subprocess.run([*cc, "--version"], capture_output=True, text=True,
                                 timeout=60).stdout
    except (OSError, subprocess.SubprocessError) as err:
        raise NativeUnavailable(f"C compiler {cc[0]!r} does not run: {err}") from err
    key = hashlib.sha256(b"\0".join(s.encode() for s in (
        source.read_text(), *(h.read_text() for h in headers), " ".join(cc + flags),
        version, platform.machine(),
        platform.system()))).hexdigest()[:24]
    suffix = sysconfig.get_config_var("SHLIB_SUFFIX") or ".so"
    target = _cache_dir() / f"{source.stem}-{key}{suffix}"
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError:                                       # unwritable cache: a private temp dir
        target = Path(tempfile.mkdtemp(prefix="dynvae-native-")) / target.name
    if not target.exists():
        _compile(cc, flags, target, source)
    try:
        return ctypes.CDLL(str(target))
    except OSError as err:
        raise NativeUnavailable(f"loading the compiled native library {target.name} "
                                f"failed: {err}") from err


@lru_cache(maxsize=1)
def _library() -> ctypes.CDLL:
    """Compile (once per source/compiler) and load the Kalman library."""
    lib = compiled_library(_SOURCE, _HEADERS)
    i64, ptr = ctypes.c_int64, ctypes.c_void_p
    for fn in (lib.dynvae_kalman, lib.dynvae_kalman_shared):
        fn.restype = ctypes.c_int
        fn.argtypes = [i64, i64, ctypes.c_int, ctypes.c_int, ptr, ptr, *([ptr] * 10),
                       ctypes.c_double, ptr]
    return lib


def native_available() -> bool:
    """True when the C back end compiles (or is cached) and loads on this machine."""
    try:
        _library()
    except NativeUnavailable:
        return False
    return True


def needs_grad(model: LinearGaussianSSM, *tensors: Tensor | None) -> bool:
    """True when autograd is on and a parameter of ``model`` or a tensor requires grad."""
    if not torch.is_grad_enabled():                       # e.g. under torch.no_grad()
        return False
    values = [getattr(model, f) for f in _EVENT_DIMS] + list(tensors)
    return any(v is not None and v.requires_grad for v in values)


def with_autograd_fallback(native_fn: Callable, autograd_fn: Callable) -> Callable:
    """``native_fn`` where no gradient is needed, else the differentiable ``autograd_fn``
    (same signature ``(model, x, mask=None, u=None)``)."""
    def run(model: LinearGaussianSSM, x: Tensor, mask: Tensor | None = None,
            u: Tensor | None = None):
        fn = autograd_fn if needs_grad(model, x, u) else native_fn
        return fn(model, x, mask, u)
    return run


def _refuse_grad(model: LinearGaussianSSM, *tensors: Tensor | None) -> None:
    if needs_grad(model, *tensors):
        raise DataError("the native Kalman back end is inference-only and does not support "
                        "autograd: an input requires grad; use kalman_filter/rts_smoother or "
                        "parallel_kalman_filter/parallel_rts_smoother for gradients "
                        "(or call it under torch.no_grad())")


def _strided(v: Tensor, event: int, time_axis: bool, batch_shape: torch.Size
             ) -> tuple[Tensor, int, int]:
    """float64 contiguous buffer of a parameter and its batch and time strides (doubles).

    A parameter without batch dims (or with only size-1 ones) is shared: batch stride 0;
    otherwise it is broadcast to ``batch_shape``. A constant parameter has time stride 0.
    """
    lead = v.shape[: v.ndim - event - int(time_axis)]
    tail = v.shape[v.ndim - event - int(time_axis):]
    size = int(torch.Size(v.shape[v.ndim - event:]).numel())
    v = v.detach().to("cpu", torch.float64)
    if torch.Size(lead).numel() == 1:
        buf, b_stride = v.reshape(tail).contiguous(), 0
    else:
        buf = v.expand(*batch_shape, *tail).contiguous()
        b_stride = int(torch.Size(tail).numel())
    return buf, b_stride, size if time_axis else 0


def _batch_major_params(model: LinearGaussianSSM, trans_off: Tensor | None,
                        batch_shape: torch.Size) -> tuple[list[Tensor], ctypes.Array,
                                                          ctypes.Array]:
    """Parameter buffers (kept alive by the caller), their pointers and strides."""
    bufs, strides = [], []
    for n in _PARAMS:
        buf, bs, ts = _strided(getattr(model, n), _EVENT_DIMS[n], n in model.time_varying,
                               batch_shape)
        bufs.append(buf)
        strides += [bs, ts]
    if trans_off is not None:
        buf, bs, ts = _strided(trans_off, 1, True, batch_shape)
        bufs.append(buf)
        strides += [bs, ts]
    ptrs = (ctypes.c_void_p * 7)(*[b.data_ptr() for b in bufs],
                                 *([None] if trans_off is None else []))
    strides_arr = (ctypes.c_int64 * 14)(*strides, *([0, 0] if trans_off is None else []))
    return bufs, ptrs, strides_arr


def _raise_on_error(rc: int, err: ctypes.Array, smooth: bool, batch_shape: torch.Size) -> None:
    if rc == 0:
        return
    if rc == 3:
        raise MemoryError("native Kalman back end: out of memory for its workspace")
    engine = f"native {'RTS smoother' if smooth else 'Kalman filter'}"
    # numpy's unravel_index: torch's imports sympy on first use (seconds)
    seq = ",".join(str(int(i)) for i in np.unravel_index(int(err[0]), tuple(batch_shape))) \
        or "0"
    if rc == 4:
        raise NumericalError(f"{engine}: {_EXPLODED[err[2]]} exploded or became non-finite "
                             f"at step {err[1]} (sequence {seq}): it leaves the bound that "
                             "exact conditioning obeys, so the result would be wrong")
    if rc:
        raise NumericalError(f"{engine}: {_ERRORS.get(rc, f'error {rc}')} at step {err[1]} "
                             f"(sequence {seq})")


_MADV_HUGEPAGE, _HUGE = 14, 2 << 20


@lru_cache(maxsize=1)
def _madvise() -> Callable | None:
    """libc's madvise on Linux, else None."""
    if platform.system() != "Linux":
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.madvise
    except (OSError, AttributeError):
        return None
    fn.argtypes, fn.restype = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int], ctypes.c_int
    return fn


def _empty(*shape: int) -> Tensor:
    """torch.empty float64, with the kernel asked (madvise, Linux) to back large outputs by
    2 MiB pages: a fresh output is first touched by the C code, and at B = 1024, T = 1000
    the 4 KiB page faults cost more than the filter itself."""
    t = torch.empty(*shape, dtype=torch.float64)
    nbytes, advise = t.numel() * 8, _madvise()
    if advise is not None and nbytes >= 2 * _HUGE:
        start = -(-t.data_ptr() // _HUGE) * _HUGE
        length = (t.data_ptr() + nbytes - start) // _HUGE * _HUGE
        if length > 0:
            advise(start, length, _MADV_HUGEPAGE)           # a hint: failure changes nothing
    return t


def _batch_shape(model: LinearGaussianSSM, x: Tensor, trans_off: Tensor | None
                 ) -> torch.Size:
    leads = [x.shape[:-2]] + [
        getattr(model, n).shape[: getattr(model, n).ndim - _EVENT_DIMS[n]
                                - int(n in model.time_varying)] for n in _PARAMS]
    if trans_off is not None:
        leads.append(trans_off.shape[:-2])
    return broadcast_shapes(*leads)


def _run(model: LinearGaussianSSM, x: Tensor, mask: Tensor | None, u: Tensor | None,
         smooth: bool) -> tuple[FilterResult, tuple[Tensor, Tensor, Tensor] | None]:
    _refuse_grad(model, x, u)
    all_observed = mask is None
    mask = check_inputs(model, x, mask, u)
    lib = _library()
    T, S, D = x.shape[-2], model.state_dim, model.obs_dim
    with torch.no_grad():
        trans_off, emis_off = model.offsets(T, u)
        y = x if emis_off is None else x - emis_off
    batch_shape = _batch_shape(model, y, trans_off)
    B = int(batch_shape.numel())
    if B == 0 or T == 0:
        raise DataError(f"the native Kalman back end needs B, T > 0, got batch "
                        f"{tuple(batch_shape)} and T={T}")
    y = y.detach().to("cpu", torch.float64)
    all_observed = all_observed or bool(mask.all())
    if not all_observed:
        y = torch.where(mask.to(y.device), y, torch.zeros_like(y))
    y = y.expand(*batch_shape, T, D).reshape(B, T, D).contiguous()
    bufs, ptrs, strides = _batch_major_params(model, trans_off, batch_shape)
    # shared covariances (P0, A, Q, H, R shared by the batch, one mask for all): the C code
    # computes them once, means (T, S, B) and covariances (T, S, S); else (B, T, S[, S])
    shared = B > 1 and all(strides[2 * k] == 0 for k in range(1, 6))
    if all_observed:
        m = torch.ones((T, D) if shared else (B, T, D), dtype=torch.uint8)
    else:
        m = mask.to("cpu", torch.uint8).expand(*batch_shape, T, D).reshape(B, T, D)
        shared = shared and bool((m == m[:1]).all())
        m = m[0].contiguous() if shared else m.contiguous()
    if shared:
        mean, cov = lambda: _empty(T, S, B), lambda: _empty(T, S, S)
    else:
        mean, cov = lambda: _empty(B, T, S), lambda: _empty(B, T, S, S)
    out = [mean(), cov(), mean(), cov(), torch.empty(B, dtype=torch.float64)]
    out += [mean(), cov(), cov()] if smooth else []                  # sm, sc, cc
    err = (ctypes.c_int64 * 3)()
    fn = lib.dynvae_kalman_shared if shared else lib.dynvae_kalman
    rc = fn(B, T, S, D, ptrs, strides, y.data_ptr(), m.data_ptr(),
            *[t.data_ptr() for t in out], *([] if smooth else [None] * 3),
            tolerance(torch.float64), err)
    del bufs, y, m
    _raise_on_error(rc, err, smooth, batch_shape)
    if not bool(torch.isfinite(out[4]).all()):
        raise NumericalError(f"native {'RTS smoother' if smooth else 'Kalman filter'}: the "
                             "log-likelihood is not finite")

    def back(t: Tensor, is_cov: bool = False) -> Tensor:
        """(B, T, ...) -> (*batch, T, ...); shared means (T, S, B) and covariances (T, S, S)
        likewise (the latter broadcast over the batch): views, no copy."""
        if shared:
            t = t.expand(B, *t.shape) if is_cov else t.permute(2, 0, 1)
        return t.reshape((*batch_shape, *t.shape[1:])).to(x.device, x.dtype)
    pm, pc, fm, fc, ll = out[:5]
    f = FilterResult(ll.reshape(batch_shape).to(x.device, x.dtype), back(pm),
                     back(pc, True), back(fm), back(fc, True))
    return f, (back(out[5]), back(out[6], True), back(out[7], True)) if smooth else None


def native_kalman_filter(model: LinearGaussianSSM, x: Tensor, mask: Tensor | None = None,
                         u: Tensor | None = None) -> FilterResult:
    """Kalman filter in C; arguments and result as :func:`dynvae.ssm.kalman_filter`.

    Inference only (no autograd). Raises :class:`NativeUnavailable` if no C compiler
    is found or compilation fails.
    """
    return _run(model, x, mask, u, smooth=False)[0]


def native_rts_smoother(model: LinearGaussianSSM, x: Tensor, mask: Tensor | None = None,
                        u: Tensor | None = None) -> SmootherResult:
    """Kalman filter + RTS smoother in C, with lag-one cross covariances; arguments and
    result as :func:`dynvae.ssm.rts_smoother`. Inference only (no autograd)."""
    f, (sm, sc, cc) = _run(model, x, mask, u, smooth=True)
    return SmootherResult(f.log_likelihood, sm, sc, cc, f)
