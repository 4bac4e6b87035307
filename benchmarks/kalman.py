"""Kalman filter + RTS smoother throughput: dynvae (sequential, parallel scan) against
pykalman, filterpy, dynamax and a numba-compiled loop, on a Matérn-5/2 state-space GP.

The model: F = [[0,1,0],[0,0,1],[-l^3,-3l^2,-3l]], l = sqrt(5)/lengthscale, discretised
as A = expm(F dt), Pinf from the Lyapunov equation F Pinf + Pinf F^T + L q L^T = 0,
Q = Pinf - A Pinf A^T; one noisy observation of the first state. The numba loop
(filter + smoother, float64, numpy matrix ops inside ``@njit``) is the accuracy
reference; ``max_abs_diff`` is the largest difference of smoothed means against it.
``numba_loop_unrolled`` is the same algorithm with every small product written as
scalar loops over preallocated scratch (the fast way to write it in numba). Timings
are medians of repeats and exclude compilation (jit / torch.compile / the C compiler
of ``dynvae_native``), which is reported separately.

    python benchmarks/kalman.py [--quick] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time

import numpy as np
import torch

from dynvae.ssm import (
    CompiledScan,
    EagerScan,
    LinearGaussianSSM,
    native_rts_smoother,
    parallel_rts_smoother,
    rts_smoother,
)

LENGTHSCALE, VARIANCE, NOISE, DT = 0.5, 1.0, 0.1, 0.01


def matern52(dtype=torch.float64) -> dict[str, np.ndarray]:
    """Discretised Matérn-5/2 SDE: m0, P0 = Pinf, A, Q, H, R as float64 arrays."""
    lam = math.sqrt(5.0) / LENGTHSCALE
    F = torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0],
                      [-lam**3, -3 * lam**2, -3 * lam]], dtype=torch.float64)
    q = 16.0 / 3.0 * VARIANCE * lam**5                       # spectral density of the noise
    Lq = torch.zeros(3, 3, dtype=torch.float64)
    Lq[2, 2] = q
    eye = torch.eye(3, dtype=torch.float64)
    # vec(F P + P F^T) = (I kron F + F kron I) vec(P)
    lyap = torch.kron(eye, F) + torch.kron(F, eye)
    Pinf = torch.linalg.solve(lyap, -Lq.reshape(-1)).reshape(3, 3)
    Pinf = 0.5 * (Pinf + Pinf.T)
    A = torch.linalg.matrix_exp(F * DT)
    Q = Pinf - A @ Pinf @ A.T
    return {"m0": np.zeros(3), "P0": Pinf.numpy(), "A": A.numpy(), "Q": 0.5 * (Q + Q.T).numpy(),
            "H": np.array([[1.0, 0.0, 0.0]]), "R": np.array([[NOISE]])}


def observations(T: int, B: int, seed: int = 0) -> np.ndarray:
    """(B, T, 1) noisy smooth signal."""
    rng = np.random.default_rng(seed)
    t = np.arange(T) * DT
    phase = rng.uniform(0, 2 * np.pi, size=(B, 1))
    return (np.sin(2 * t + phase) + math.sqrt(NOISE) * rng.standard_normal((B, T)))[..., None]


CPU_SECONDS: dict[int, float] = {}


def timed(fn, repeats: int) -> tuple[float, object]:
    """Median wall-clock seconds of ``repeats`` calls and the last output; the median
    process CPU seconds (all threads) of the same calls is left in CPU_SECONDS[id(fn)]:
    on a loaded machine wall time includes time spent waiting for a core."""
    times, cpu, out = [], [], None
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    CPU_SECONDS[id(fn)] = statistics.median(cpu)
    return statistics.median(times), out


# ---------------------------------------------------------------- implementations
def make_numba():
    import numba

    @numba.njit(cache=True, fastmath=False)
    def smooth(m0, P0, A, Q, H, R, y):
        T, S, D = y.shape[0], m0.shape[0], y.shape[1]
        pm, pc = np.empty((T, S)), np.empty((T, S, S))
        fm, fc = np.empty((T, S)), np.empty((T, S, S))
        m, P = m0.copy(), P0.copy()
        AP, PHt = np.empty((S, S)), np.empty((S, D))
        Sm, K = np.empty((D, D)), np.empty((S, D))
        for t in range(T):
            if t > 0:
                m = A @ m
                AP[:] = A @ P
                P = AP @ A.T + Q
            pm[t], pc[t] = m, P
            PHt[:] = P @ H.T
            Sm[:] = H @ PHt + R
            K[:] = np.linalg.solve(Sm, PHt.T).T
            m = m + K @ (y[t] - H @ m)
            P = P - K @ Sm @ K.T
            P = 0.5 * (P + P.T)
            fm[t], fc[t] = m, P
        sm, sc = fm.copy(), fc.copy()
        for t in range(T - 2, -1, -1):
            G = np.linalg.solve(pc[t + 1], A @ fc[t]).T
            sm[t] = fm[t] + G @ (sm[t + 1] - pm[t + 1])
            C = fc[t] + G @ (sc[t + 1] - pc[t + 1]) @ G.T
            sc[t] = 0.5 * (C + C.T)
        return sm, sc
    return smooth


def make_numba_loops():
    """The same filter + RTS smoother with every small matrix product written as
    explicit scalar loops over preallocated scratch (no numpy temporaries), Cholesky
    solves for S^{-1} and P_{t+1|t}^{-1}: what a careful numba user would write."""
    import numba

    @numba.njit(cache=True, fastmath=False)
    def chol_solve(n, M, L, X, m):
        """X (n, m) <- M^{-1} X for SPD M (n, n); L is scratch for the factor."""
        for j in range(n):
            d = M[j, j]
            for k in range(j):
                d -= L[j, k] * L[j, k]
            d = math.sqrt(d)
            L[j, j] = d
            for i in range(j + 1, n):
                s = M[i, j]
                for k in range(j):
                    s -= L[i, k] * L[j, k]
                L[i, j] = s / d
        for c in range(m):
            for i in range(n):
                s = X[i, c]
                for k in range(i):
                    s -= L[i, k] * X[k, c]
                X[i, c] = s / L[i, i]
            for i in range(n - 1, -1, -1):
                s = X[i, c]
                for k in range(i + 1, n):
                    s -= L[k, i] * X[k, c]
                X[i, c] = s / L[i, i]

    @numba.njit(cache=True, fastmath=False)
    def smooth(m0, P0, A, Q, H, R, y):
        T, S, D = y.shape[0], m0.shape[0], y.shape[1]
        pm, pc = np.empty((T, S)), np.empty((T, S, S))
        fm, fc = np.empty((T, S)), np.empty((T, S, S))
        m, P, AP = m0.copy(), P0.copy(), np.empty((S, S))
        PHt, Sm, KT = np.empty((S, D)), np.empty((D, D)), np.empty((D, S))
        LD, LS, r = np.empty((D, D)), np.empty((S, S)), np.empty(D)
        mp = np.empty(S)
        for t in range(T):
            if t > 0:
                for i in range(S):
                    acc = 0.0
                    for k in range(S):
                        acc += A[i, k] * m[k]
                    mp[i] = acc
                    for j in range(S):
                        acc = 0.0
                        for k in range(S):
                            acc += A[i, k] * P[k, j]
                        AP[i, j] = acc
                m[:] = mp
                for i in range(S):
                    for j in range(i + 1):
                        acc = Q[i, j]
                        for k in range(S):
                            acc += AP[i, k] * A[j, k]
                        P[i, j] = acc
                        P[j, i] = acc
            pm[t], pc[t] = m, P
            for i in range(S):
                for j in range(D):
                    acc = 0.0
                    for k in range(S):
                        acc += P[i, k] * H[j, k]
                    PHt[i, j] = acc
                    KT[j, i] = acc
            for i in range(D):
                acc = y[t, i]
                for k in range(S):
                    acc -= H[i, k] * m[k]
                r[i] = acc
                for j in range(D):
                    acc = R[i, j]
                    for k in range(S):
                        acc += H[i, k] * PHt[k, j]
                    Sm[i, j] = acc
            chol_solve(D, Sm, LD, KT, S)                  # K^T = S^{-1} H P
            for i in range(S):
                for j in range(D):
                    m[i] += KT[j, i] * r[j]
                for j in range(i + 1):                    # P - K S K^T = P - K (H P)
                    acc = P[i, j]
                    for k in range(D):
                        acc -= KT[k, i] * PHt[j, k]
                    P[i, j] = acc
                    P[j, i] = acc
            fm[t], fc[t] = m, P
        sm, sc = fm.copy(), fc.copy()
        X, dP, GdP = np.empty((S, S)), np.empty((S, S)), np.empty((S, S))
        for t in range(T - 2, -1, -1):
            for i in range(S):                            # X = A P_{t|t}, then G^T
                for j in range(S):
                    acc = 0.0
                    for k in range(S):
                        acc += A[i, k] * fc[t, k, j]
                    X[i, j] = acc
            chol_solve(S, pc[t + 1], LS, X, S)
            for i in range(S):
                acc = fm[t, i]
                for k in range(S):
                    acc += X[k, i] * (sm[t + 1, k] - pm[t + 1, k])
                sm[t, i] = acc
                for j in range(S):
                    dP[i, j] = sc[t + 1, i, j] - pc[t + 1, i, j]
            for i in range(S):
                for j in range(S):
                    acc = 0.0
                    for k in range(S):
                        acc += X[k, i] * dP[k, j]
                    GdP[i, j] = acc
            for i in range(S):
                for j in range(i + 1):
                    acc = fc[t, i, j]
                    for k in range(S):
                        acc += GdP[i, k] * X[k, j]
                    sc[t, i, j] = acc
                    sc[t, j, i] = acc
        return sm, sc
    return smooth


def run_numba(p, y, smooth):
    return np.stack([smooth(p["m0"], p["P0"], p["A"], p["Q"], p["H"], p["R"], yb)[0]
                     for yb in y])


def torch_model(p) -> LinearGaussianSSM:
    t = {k: torch.from_numpy(v) for k, v in p.items()}
    return LinearGaussianSSM(t["m0"], t["P0"], t["A"], t["Q"], t["H"], t["R"])


def run_pykalman(p, y):
    from pykalman import KalmanFilter
    # pykalman's initial state is z_0 itself, observed by x_0, as in dynvae
    kf = KalmanFilter(transition_matrices=p["A"], observation_matrices=p["H"],
                      transition_covariance=p["Q"], observation_covariance=p["R"],
                      initial_state_mean=p["m0"], initial_state_covariance=p["P0"])
    return np.stack([kf.smooth(yb)[0] for yb in y])


def run_filterpy(p, y):
    from filterpy.kalman import KalmanFilter
    out = []
    for yb in y:
        kf = KalmanFilter(dim_x=3, dim_z=1)
        kf.x, kf.P = p["m0"].copy(), p["P0"].copy()
        kf.F, kf.Q, kf.H, kf.R = p["A"], p["Q"], p["H"], p["R"]
        ms, Ps = np.empty((len(yb), 3)), np.empty((len(yb), 3, 3))
        for t, obs in enumerate(yb):
            if t > 0:
                kf.predict()
            kf.update(obs)
            ms[t], Ps[t] = kf.x, kf.P
        out.append(kf.rts_smoother(ms, Ps)[0])
    return np.stack(out)


def make_dynamax(p, B):
    import jax
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    from dynamax.linear_gaussian_ssm import (
        lgssm_smoother,
        parallel_lgssm_smoother,
    )
    from dynamax.linear_gaussian_ssm.inference import make_lgssm_params
    params = make_lgssm_params(*(jnp.asarray(p[k]) for k in ("m0", "P0", "A", "Q", "H", "R")))
    fns = {}
    for name, fn in (("dynamax_sequential", lgssm_smoother),
                     ("dynamax_parallel", parallel_lgssm_smoother)):
        one = lambda e, fn=fn: fn(params, e).smoothed_means
        fns[name] = jax.jit(jax.vmap(one) if B > 1 else lambda e, one=one: one(e[0])[None])
    return fns, lambda a: np.asarray(jax.block_until_ready(a))


# ---------------------------------------------------------------- driver
# many short sequences (training batches, multi-sequence EM), then long single ones
BATCH_SWEEP = [(1000, b) for b in (1, 4, 16, 64, 256, 1024)]


def cases(quick: bool, only: str | None = None) -> list[tuple[int, int]]:
    if only:
        return [tuple(int(float(v)) for v in case.split(",")) for case in only.split(";")]
    if quick:
        return [(1000, 1), (3000, 1), (1000, 8), (1000, 64)]
    return BATCH_SWEEP + [(10_000, 1), (100_000, 1), (1_000_000, 1)]


# peers with Python-level loops: largest T * B timed, larger sizes estimated per step.
# dynamax's parallel smoother: on our 2-core machine its jit compilation at T = 1e5
# sat idle for over 5 minutes, so it is timed up to 1e4 steps only.
STEP_LIMITS = {"pykalman": 10_000, "filterpy": 10_000, "dynvae_sequential": 10_000,
               "dynamax_parallel": 10_000}
# these loop over time only; their batch dim is vectorised, so the limit applies to T
TIME_ONLY_LIMIT = {"dynvae_sequential"}


# jit compilation of these takes tens of seconds per shape: left out of --quick
QUICK_SKIP = {"dynamax_parallel"}


def bench_case(T: int, B: int, repeats: int, rows: list[dict], per_step: dict,
               quick: bool = False) -> None:
    p = matern52()
    y = observations(T, B)
    case = f"T={T:g},B={B}"
    smooth = make_numba()
    smooth(p["m0"], p["P0"], p["A"], p["Q"], p["H"], p["R"], y[0, :10])       # compile
    ref_t, ref = timed(lambda: run_numba(p, y, smooth), repeats)
    model, x = torch_model(p), torch.from_numpy(y)
    loops = make_numba_loops()
    impls = {
        "numba_loop_unrolled": lambda: run_numba(p, y, loops),
        "dynvae_native": lambda: native_rts_smoother(model, x).smoothed_mean.numpy(),
        "dynvae_sequential": lambda: rts_smoother(model, x).smoothed_mean.numpy(),
        "dynvae_parallel_eager": lambda: parallel_rts_smoother(
            model, x, method=EagerScan()).smoothed_mean.numpy(),
        "dynvae_parallel_compiled": lambda: parallel_rts_smoother(
            model, x, method=CompiledScan()).smoothed_mean.numpy(),
        "pykalman": lambda: run_pykalman(p, y),
        "filterpy": lambda: run_filterpy(p, y),
    }
    try:
        fns, block = make_dynamax(p, B)
        import jax.numpy as jnp
        yj = jnp.asarray(y)
        for name, fn in fns.items():
            impls[name] = lambda fn=fn: block(fn(yj))
    except ImportError as err:
        print(f"  dynamax not available ({err}); skipped")
    rows.append(_row(case, "numba_loop", ref_t, T * B, 0.0))
    print(f"{case}: numba_loop {ref_t:.4f} s")
    for name, fn in impls.items():
        if quick and name in QUICK_SKIP:
            print(f"  {name}: skipped in --quick (compiles per shape)")
            continue
        size = T if name in TIME_ONLY_LIMIT else T * B
        if name in STEP_LIMITS and size > STEP_LIMITS[name]:
            if name in per_step:
                est = per_step[name] * T * B
                print(f"  {name}: skipped above {STEP_LIMITS[name]} steps; "
                      f"estimated {est:.1f} s from {per_step[name] * 1e6:.1f} us/step")
                rows.append({**_row(case, name, float("nan"), T * B, float("nan")),
                             "estimated_seconds": est})
            continue
        try:
            warm_t0 = time.perf_counter()
            fn()                                          # warm-up: jit / torch.compile
            warm = time.perf_counter() - warm_t0
            secs, out = timed(fn, repeats)
        except ImportError as err:
            print(f"  {name} not available ({err}); skipped")
            continue
        per_step[name] = secs / (T * B)
        diff = float(np.max(np.abs(np.asarray(out) - ref)))
        row = _row(case, name, secs, T * B, diff)
        row.update(first_call_seconds=warm, speedup_vs_numba=ref_t / secs,
                   cpu_seconds=CPU_SECONDS[id(fn)])
        rows.append(row)
        print(f"  {name:26s} {secs:9.4f} s (cpu {row['cpu_seconds']:8.4f} s) "
              f"{T * B / secs:12.0f} steps/s  x{ref_t / secs:7.3f} vs numba  "
              f"max|diff| {diff:.2e}  (first call {warm:.1f} s)")
    if B > 1:
        masked_native(model, x, case, repeats, rows)


def masked_native(model: LinearGaussianSSM, x: torch.Tensor, case: str, repeats: int,
                  rows: list[dict]) -> None:
    """The native smoother when every sequence has its own missing entries (10 %): the
    covariances then differ per sequence and the C code runs its 8-lane SIMD blocks
    instead of sharing them. No peer here takes masks, so this row has no ratio; its
    accuracy is checked against dynvae's parallel smoother on the same masks."""
    g = torch.Generator().manual_seed(1)
    mask = torch.rand(x.shape, generator=g) > 0.1
    fn = lambda: native_rts_smoother(model, x, mask).smoothed_mean.numpy()
    fn()
    secs, out = timed(fn, repeats)
    ref = parallel_rts_smoother(model, x, mask).smoothed_mean.numpy()
    diff = float(np.max(np.abs(out - ref)))
    rows.append({**_row(case, "masked:dynvae_native", secs, x.shape[0] * x.shape[1], diff),
                 "cpu_seconds": CPU_SECONDS[id(fn)]})
    print(f"  {'masked:dynvae_native':26s} {secs:9.4f} s (cpu {CPU_SECONDS[id(fn)]:8.4f} s) "
          f"per-sequence masks, max|diff| vs parallel {diff:.2e}")


def _row(case, impl, secs, steps, diff) -> dict:
    return {"case": case, "impl": impl, "seconds": secs,
            "steps_per_s": steps / secs if secs == secs else float("nan"),
            "max_abs_diff": diff}


def ratio_table(rows: list[dict]) -> None:
    by_case: dict[str, dict[str, tuple[float, str]]] = {}
    for r in rows:
        if r["case"] == "compile" or r["impl"].startswith("masked:"):
            continue
        secs, tag = r["seconds"], ""
        if secs != secs and "estimated_seconds" in r:
            secs, tag = r["estimated_seconds"], " (est.)"
        by_case.setdefault(r["case"], {})[r["impl"]] = (secs, tag)
    print("\nratios at each case (peer seconds / best dynvae seconds; est. = from per-step "
          "cost):")
    for case, d in by_case.items():
        ours = {k: v for k, (v, tag) in d.items() if k.startswith("dynvae") and not tag}
        best_name = min(ours, key=ours.get)
        peers = ", ".join(f"{k} {v / ours[best_name]:.2f}x{tag}" for k, (v, tag) in d.items()
                          if not k.startswith("dynvae") and v == v)
        print(f"  {case} (best: {best_name}): {peers}")
    pairs = {}
    for r in rows:
        if r["impl"] in ("dynvae_native", "dynamax_sequential") and r["seconds"] == r["seconds"]:
            pairs.setdefault(r["case"], {})[r["impl"]] = r
    print("\ndynamax_sequential / dynvae_native (>= 1: the C back end is faster), wall and CPU:")
    for case, d in pairs.items():
        if len(d) == 2:
            a, b = d["dynamax_sequential"], d["dynvae_native"]
            print(f"  {case}: wall {a['seconds'] / b['seconds']:.2f}x, "
                  f"cpu {a['cpu_seconds'] / b['cpu_seconds']:.2f}x")


def native_compile_seconds() -> float:
    """Time to compile the native back end from scratch (into a throw-away cache)."""
    import os
    import tempfile

    from dynvae.ssm import native
    old = os.environ.get("DYNVAE_CACHE_DIR")
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["DYNVAE_CACHE_DIR"] = tmp
        native._library.cache_clear()
        t0 = time.perf_counter()
        native._library()
        secs = time.perf_counter() - t0
    if old is None:
        del os.environ["DYNVAE_CACHE_DIR"]
    else:
        os.environ["DYNVAE_CACHE_DIR"] = old
    native._library.cache_clear()
    return secs


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, < 1 min")
    ap.add_argument("--json", type=str, default=None, help="write result rows here")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--case", type=str, default=None,
                    help="cases 'T,B' separated by ';', e.g. '1000,256' or '1000,1;1000,4'")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch intra-op threads (1: fair to the single-threaded loops, and "
                         "robust on a loaded machine)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"torch threads: {torch.get_num_threads()}; timings: median of repeats, "
          "first call (compilation) excluded and reported separately")
    repeats = args.repeats or (1 if args.quick else 3)
    rows: list[dict] = []
    per_step: dict[str, float] = {}
    compile_s = native_compile_seconds()
    print(f"dynvae_native: C compilation from scratch {compile_s:.2f} s (once per machine; "
          "cached, not in any timing below)")
    rows.append({"case": "compile", "impl": "dynvae_native", "seconds": compile_s})
    for T, B in cases(args.quick, args.case):
        bench_case(T, B, repeats, rows, per_step, args.quick)
        if args.json:                                # after every case: partial runs survive
            from dynvae.utils import atomic_write_text
            atomic_write_text(args.json, json.dumps(rows, indent=1))
    ratio_table(rows)


if __name__ == "__main__":
    main()
