"""Inference-only Kalman filter and RTS smoother in plain C, compiled on first use.

Same outputs as :func:`dynvae.ssm.kalman_filter` / :func:`dynvae.ssm.rts_smoother`
(masks, any batch dims, time-varying A/Q/H/R, biases and inputs), for long sequences
on the CPU, where the Python-level loop is slow and the associative scan does several
times the work of the sequential recursion. The C source (``_native/kalman.c``, C99,
no BLAS) is compiled with the system C compiler (``$CC``, else the one Python was
built with, else ``cc``/``gcc``/``clang``) using ``-O3`` and IEEE arithmetic (no
``-ffast-math``, no ``-march=native``, so a cached library stays valid on any machine
of the same architecture). The shared library is cached under ``$DYNVAE_CACHE_DIR``
(default ``~/.cache/dynvae/native``), keyed by a hash of the source, flags, compiler
version and platform, and written atomically.

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

import torch
from torch import Tensor

from dynvae.errors import ConfigError, DataError
from dynvae.ssm.kalman import FilterResult, SmootherResult, check_inputs
from dynvae.ssm.model import _EVENT_DIMS, LinearGaussianSSM

_SOURCE = Path(__file__).with_name("_native") / "kalman.c"
_PARAMS = ("initial_mean", "initial_cov", "transition_matrix", "transition_cov",
           "emission_matrix", "emission_cov")
_ERRORS = {1: "the innovation covariance H P H^T + R is not positive definite",
           2: "the predicted covariance P_{t+1|t} is singular (smoother gain undefined)",
           3: "out of memory"}


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


def compiled_library(source: Path) -> ctypes.CDLL:
    """Compile the C file ``source`` of ``dynvae/ssm/_native`` (once per source, flags,
    compiler and platform; cached) and load it. Raises NativeUnavailable."""
    cc = find_c_compiler()
    flags = ["-O3", "-std=c99", "-fPIC", "-shared"]
    try:
        version = subprocess.run([*cc, "--version"], capture_output=True, text=True,
                                 timeout=60).stdout
    except (OSError, subprocess.SubprocessError) as err:
        raise NativeUnavailable(f"C compiler {cc[0]!r} does not run: {err}") from err
    key = hashlib.sha256(b"\0".join(s.encode() for s in (
        source.read_text(), " ".join(cc + flags), version, platform.machine(),
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
    lib = compiled_library(_SOURCE)
    i64, ptr = ctypes.c_int64, ctypes.c_void_p
    lib.dynvae_kalman.restype = ctypes.c_int
    lib.dynvae_kalman.argtypes = [i64, i64, ctypes.c_int, ctypes.c_int, ptr, ptr,
                                  *([ptr] * 11)]
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


def _run(model: LinearGaussianSSM, x: Tensor, mask: Tensor | None, u: Tensor | None,
         smooth: bool) -> tuple[FilterResult, tuple[Tensor, Tensor, Tensor] | None]:
    _refuse_grad(model, x, u)
    mask = check_inputs(model, x, mask, u)
    lib = _library()
    T, S, D = x.shape[-2], model.state_dim, model.obs_dim
    with torch.no_grad():
        trans_off, emis_off = model.offsets(T, u)
        y = x if emis_off is None else x - emis_off
    leads = [x.shape[:-2], y.shape[:-2]] + [
        getattr(model, n).shape[: getattr(model, n).ndim - _EVENT_DIMS[n]
                                - int(n in model.time_varying)] for n in _PARAMS]
    if trans_off is not None:
        leads.append(trans_off.shape[:-2])
    batch_shape = torch.broadcast_shapes(*leads)
    B = int(batch_shape.numel())
    if B == 0 or T == 0:
        raise DataError(f"the native Kalman back end needs B, T > 0, got batch "
                        f"{tuple(batch_shape)} and T={T}")
    y = torch.where(mask, y, torch.zeros_like(y)).detach().to("cpu", torch.float64)
    y = y.expand(*batch_shape, T, D).contiguous()
    m = mask.to("cpu", torch.uint8).expand(*batch_shape, T, D).contiguous()
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
    f64 = dict(dtype=torch.float64)
    pm, fm = torch.empty(B, T, S, **f64), torch.empty(B, T, S, **f64)
    pc, fc = torch.empty(B, T, S, S, **f64), torch.empty(B, T, S, S, **f64)
    ll = torch.empty(B, **f64)
    sm_out = (torch.empty(B, T, S, **f64), torch.empty(B, T, S, S, **f64),
              torch.empty(B, T, S, S, **f64)) if smooth else None
    err = (ctypes.c_int64 * 2)()
    rc = lib.dynvae_kalman(B, T, S, D, ptrs, strides_arr, y.data_ptr(), m.data_ptr(),
                           pm.data_ptr(), pc.data_ptr(), fm.data_ptr(), fc.data_ptr(),
                           ll.data_ptr(), *([t.data_ptr() for t in sm_out] if smooth
                                            else [None] * 3), err)
    if rc:
        raise DataError(f"native Kalman back end: {_ERRORS.get(rc, f'error {rc}')} "
                        f"(sequence {err[0]}, step {err[1]})")
    back = lambda t: t.reshape((*batch_shape, *t.shape[1:])).to(x.device, x.dtype)
    f = FilterResult(back(ll), back(pm), back(pc), back(fm), back(fc))
    return f, None if sm_out is None else tuple(back(t) for t in sm_out)


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
