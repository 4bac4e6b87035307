"""Kalman filter + RTS smoother throughput: dynvae (sequential, parallel scan) against
pykalman, filterpy, dynamax and a numba-compiled loop, on a Matérn-5/2 state-space GP.

The model: F = [[0,1,0],[0,0,1],[-l^3,-3l^2,-3l]], l = sqrt(5)/lengthscale, discretised
as A = expm(F dt), Pinf from the Lyapunov equation F Pinf + Pinf F^T + L q L^T = 0,
Q = Pinf - A Pinf A^T; one noisy observation of the first state. The numba loop
(filter + smoother, float64) is the accuracy reference; ``max_abs_diff`` is the largest
difference of smoothed means against it. Timings are medians of repeats and exclude
compilation (jit / torch.compile), which is reported separately.

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


def timed(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
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
def cases(quick: bool) -> list[tuple[int, int]]:
    if quick:
        return [(1000, 1), (10_000, 1), (1000, 16)]
    return [(1000, 1), (10_000, 1), (100_000, 1), (1_000_000, 1), (1000, 256)]


# peers with Python-level loops: largest T * B timed, larger sizes estimated per step
STEP_LIMITS = {"pykalman": 10_000, "filterpy": 10_000, "dynvae_sequential": 10_000}


def bench_case(T: int, B: int, repeats: int, rows: list[dict], per_step: dict) -> None:
    p = matern52()
    y = observations(T, B)
    case = f"T={T:g},B={B}"
    smooth = make_numba()
    smooth(p["m0"], p["P0"], p["A"], p["Q"], p["H"], p["R"], y[0, :10])       # compile
    ref_t, ref = timed(lambda: run_numba(p, y, smooth), repeats)
    model, x = torch_model(p), torch.from_numpy(y)
    impls = {
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
        if name in STEP_LIMITS and T * B > STEP_LIMITS[name]:
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
        row.update(first_call_seconds=warm, speedup_vs_numba=ref_t / secs)
        rows.append(row)
        print(f"  {name:26s} {secs:9.4f} s  {T * B / secs:12.0f} steps/s  "
              f"x{ref_t / secs:7.3f} vs numba  max|diff| {diff:.2e}  (first call {warm:.1f} s)")


def _row(case, impl, secs, steps, diff) -> dict:
    return {"case": case, "impl": impl, "seconds": secs,
            "steps_per_s": steps / secs if secs == secs else float("nan"),
            "max_abs_diff": diff}


def ratio_table(rows: list[dict]) -> None:
    by_case: dict[str, dict[str, float]] = {}
    for r in rows:
        by_case.setdefault(r["case"], {})[r["impl"]] = r["seconds"]
    print("\nratios at each case (peer seconds / best dynvae seconds):")
    for case, d in by_case.items():
        best = min(v for k, v in d.items() if k.startswith("dynvae") and v == v)
        peers = ", ".join(f"{k} {v / best:.2f}x" for k, v in d.items()
                          if not k.startswith("dynvae") and v == v)
        print(f"  {case}: {peers}")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, < 1 min")
    ap.add_argument("--json", type=str, default=None, help="write result rows here")
    ap.add_argument("--repeats", type=int, default=None)
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
    for T, B in cases(args.quick):
        bench_case(T, B, repeats, rows, per_step)
    ratio_table(rows)
    if args.json:
        from dynvae.utils import atomic_write_text
        atomic_write_text(args.json, json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
