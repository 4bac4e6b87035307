"""Benchmark: O(T) state-space GP against exact dense GPs and dynamax, Matern-5/2 kernel.

Two cases on irregular times with 10% missing values, float64:
  lml_grad   log marginal likelihood and its gradient w.r.t. the hyperparameters;
  posterior  posterior mean and variance at the training times.
Implementations: dynvae state-space GP (sequential, parallel and fisher Kalman engines; the
last is the native C smoother with the gradient by Fisher's identity), a dense Cholesky GP
in torch (dynvae.gp.exact), scikit-learn, gpytorch ExactGP, and dynamax's Kalman
filter/smoother on the same discretised model (no gradient: values only).
Each method runs for growing T until it passes the memory cap or its time budget;
seconds are medians of repeats. ``max_abs_diff`` compares with the dense GP where it ran.

A third case, ``fit/co2``, fits the Mauna Loa CO2 series (statsmodels, 2284 weeks, 59
missing) with a Matern-5/2 + quasi-periodic kernel end to end: ``dynvae gp --dataset co2
--kernel matern52+quasiperiodic`` in a fresh process (seconds = its wall time, including
start-up, fitting, prediction and plots; ``peak_rss_mb`` its peak resident memory), the
same with the former periodic order 6 and parallel engine, and scikit-learn's exact GP
fitting the same kernel structure (Matern-5/2 + Matern-3/2 x ExpSineSquared + white noise)
by L-BFGS-B on the standardised observed values. ``--quick`` fits every 4th week.

    python benchmarks/gp.py --quick --json out.json
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time

import numpy as np
import torch
from gp_fit import print_fit_table, run_fit_rows

from dynvae.errors import ConfigError
from dynvae.gp.exact import exact_log_marginal_likelihood, exact_posterior
from dynvae.gp.inference import FisherKalman, ParallelKalman, SequentialKalman
from dynvae.gp.kernels import Matern52
from dynvae.gp.regression import StateSpaceGP
from dynvae.utils import atomic_write_json

LENGTHSCALE, VARIANCE, NOISE = 0.8, 1.3, 0.1


def make_data(T: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    t = torch.cumsum(torch.rand(T, generator=g, dtype=torch.float64) * 0.2 + 1e-3, 0)
    y = torch.sin(t) + 0.3 * torch.randn(T, generator=g, dtype=torch.float64)
    y[torch.rand(T, generator=g) < 0.1] = float("nan")
    y[0] = 0.0
    return t, y


def timed(fn, repeats: int):
    out, times = None, []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


# --- implementations: each returns (lml, grad vector or None) or (mean, var) -------------

def dynvae_lml(engine):
    def run(t, y):
        gp = StateSpaceGP(Matern52(LENGTHSCALE, VARIANCE), noise_variance=NOISE, engine=engine())
        lml = gp.log_marginal_likelihood(t, y)
        k = gp.kernels[0]
        grads = torch.autograd.grad(lml, [k.log_lengthscale, k.log_variance,
                                          gp.log_noise_variance])
        return float(lml.detach()), np.array([float(g.sum()) for g in grads])
    return run


def dynvae_post(engine):
    def run(t, y):
        gp = StateSpaceGP(Matern52(LENGTHSCALE, VARIANCE), noise_variance=NOISE, engine=engine())
        gp.set_data(t, y)
        with torch.no_grad():
            p = gp.predict()
        return p.mean[:, 0].numpy(), p.variance[:, 0].numpy()
    return run


def dense_lml(t, y):
    k = Matern52(LENGTHSCALE, VARIANCE)
    log_noise = torch.tensor(math.log(NOISE), dtype=torch.float64, requires_grad=True)
    lml = exact_log_marginal_likelihood(k, t, y, log_noise.exp())
    grads = torch.autograd.grad(lml, [k.log_lengthscale, k.log_variance, log_noise])
    # order: log lengthscale, log variance, log noise variance
    return float(lml.detach()), np.array([float(g) for g in grads])


def dense_post(t, y):
    with torch.no_grad():
        m, v = exact_posterior(Matern52(LENGTHSCALE, VARIANCE), t, y, NOISE, t)
    return m.numpy(), v.numpy()


def sklearn_fns():
    from sklearn.gaussian_process import GaussianProcessRegressor
    from sklearn.gaussian_process import kernels as sk

    def model(t, y):
        keep = ~torch.isnan(y)
        kern = sk.ConstantKernel(VARIANCE) * sk.Matern(LENGTHSCALE, nu=2.5)
        gpr = GaussianProcessRegressor(kern, alpha=NOISE, optimizer=None)
        return gpr.fit(t[keep].numpy()[:, None], y[keep].numpy()), t.numpy()[:, None]

    def lml(t, y):
        gpr, _ = model(t, y)
        value, grad = gpr.log_marginal_likelihood(gpr.kernel_.theta, eval_gradient=True)
        return float(value), None        # gradient w.r.t. kernel only (no noise): not compared

    def post(t, y):
        gpr, tt = model(t, y)
        m, s = gpr.predict(tt, return_std=True)
        return m, s ** 2
    return lml, post


def gpytorch_fns():
    import gpytorch

    class ExactGP(gpytorch.models.ExactGP):
        def __init__(self, x, y, lik):
            super().__init__(x, y, lik)
            self.mean = gpytorch.means.ZeroMean()
            self.cov = gpytorch.kernels.ScaleKernel(gpytorch.kernels.MaternKernel(nu=2.5))

        def forward(self, x):
            return gpytorch.distributions.MultivariateNormal(self.mean(x), self.cov(x))

    def build(t, y):
        keep = ~torch.isnan(y)
        x, yy = t[keep][:, None], y[keep]
        lik = gpytorch.likelihoods.GaussianLikelihood().double()
        m = ExactGP(x, yy, lik).double()
        m.cov.base_kernel.lengthscale = LENGTHSCALE
        m.cov.outputscale = VARIANCE
        lik.noise = NOISE
        return m, lik, x, yy

    def lml(t, y):
        with gpytorch.settings.fast_computations(False, False, False), \
                gpytorch.settings.max_cholesky_size(10 ** 9):
            m, lik, x, yy = build(t, y)
            mll = gpytorch.mlls.ExactMarginalLogLikelihood(lik, m)
            value = mll(m(x), yy) * len(yy)           # gpytorch divides by n
            torch.autograd.grad(value, list(m.parameters()))   # timed, not compared
        return float(value.detach()), None

    def post(t, y):
        with gpytorch.settings.fast_computations(False, False, False), \
                gpytorch.settings.max_cholesky_size(10 ** 9), torch.no_grad():
            m, lik, _, _ = build(t, y)
            m.eval()
            f = m(t[:, None])
            return f.mean.numpy(), f.variance.numpy()
    return lml, post


def dynamax_fns():
    import jax
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    from dynamax.linear_gaussian_ssm.inference import (
        ParamsLGSSM,
        ParamsLGSSMDynamics,
        ParamsLGSSMEmissions,
        ParamsLGSSMInitial,
        lgssm_filter,
        lgssm_smoother,
    )

    def params(t):
        gp = StateSpaceGP(Matern52(LENGTHSCALE, VARIANCE), noise_variance=NOISE)
        with torch.no_grad():
            m = gp.state_space_model(t)
        j = lambda v: jnp.asarray(v.numpy())
        S = m.state_dim
        return ParamsLGSSM(
            initial=ParamsLGSSMInitial(mean=j(m.initial_mean[0]), cov=j(m.initial_cov[0])),
            dynamics=ParamsLGSSMDynamics(weights=j(m.transition_matrix[0]),
                                         bias=jnp.zeros(S), input_weights=jnp.zeros((S, 0)),
                                         cov=j(m.transition_cov[0])),
            emissions=ParamsLGSSMEmissions(weights=j(m.emission_matrix[0]), bias=jnp.zeros(1),
                                           input_weights=jnp.zeros((1, 0)),
                                           cov=j(m.emission_cov[0])))

    filt, smooth = jax.jit(lgssm_filter), jax.jit(lgssm_smoother)

    def observed(t, y):
        # dynamax has no masks: a missing value gets a huge noise variance instead
        return jnp.asarray(torch.nan_to_num(y).numpy())[:, None]

    def lml(t, y):
        p = params(t)
        R = jnp.where(jnp.isnan(jnp.asarray(y.numpy())), 1e12, NOISE)[:, None, None]
        p = p._replace(emissions=p.emissions._replace(cov=R))
        out = filt(p, observed(t, y))
        # remove the exactly known -0.5 log(2 pi 1e12) of each padded missing value
        n_missing = int(torch.isnan(y).sum())
        correction = 0.5 * n_missing * math.log(2 * math.pi * 1e12)
        return float(out.marginal_loglik.block_until_ready()) + correction, None

    def post(t, y):
        p = params(t)
        R = jnp.where(jnp.isnan(jnp.asarray(y.numpy())), 1e12, NOISE)[:, None, None]
        p = p._replace(emissions=p.emissions._replace(cov=R))
        out = smooth(p, observed(t, y))
        m = np.asarray(out.smoothed_means.block_until_ready())[:, 0]
        return m, np.asarray(out.smoothed_covariances)[:, 0, 0]
    return lml, post


# how the cost of a method grows with T (dense exact GPs: Cholesky, O(T^3))
GROWTH = {"dense-cholesky-torch": 3, "scikit-learn": 3, "gpytorch-exact": 3}


def implementations():
    """name -> (lml fn, posterior fn, largest T it is allowed to try), peers when installed."""
    impls = {   # the dense reference first: the others are compared with it
        "dense-cholesky-torch": (dense_lml, dense_post, 20_000),
        "dynvae-ssgp-sequential": (dynvae_lml(SequentialKalman), dynvae_post(SequentialKalman),
                                   10 ** 5),
        "dynvae-ssgp-parallel": (dynvae_lml(ParallelKalman), dynvae_post(ParallelKalman),
                                 10 ** 7),
    }
    try:
        impls["dynvae-ssgp-fisher"] = (dynvae_lml(FisherKalman), dynvae_post(FisherKalman), 10 ** 7)
    except ConfigError as err:
        print(f"skipping dynvae-ssgp-fisher: {err}")
    for name, make, cap in (("scikit-learn", sklearn_fns, 20_000),
                            ("gpytorch-exact", gpytorch_fns, 20_000),
                            ("dynamax-kalman", dynamax_fns, 10 ** 7)):
        try:
            lml, post = make()
        except ImportError as err:
            print(f"skipping {name}: not installed ({err})")
            continue
        impls[name] = (lml, post, cap)
    return impls


def run_benchmark(sizes: list[int], repeats: int, budget: float) -> list[dict]:
    rows, refs, stopped = [], {}, set()
    for T in sizes:
        t, y = make_data(T)
        for name, (lml_fn, post_fn, cap) in implementations().items():
            for case, fn in (("lml_grad", lml_fn), ("posterior", post_fn)):
                key = (name, case)
                if key in stopped or T > cap:
                    continue
                try:
                    reps = repeats if T <= 3000 else 1
                    if name.startswith("dynamax"):
                        fn(t, y)                      # compile for this T outside the timing
                    seconds, out = timed(lambda f=fn, a=t, b=y: f(a, b), reps)
                except (RuntimeError, MemoryError) as err:
                    print(f"{name} {case} T={T}: stopped ({type(err).__name__})")
                    stopped.add(key)
                    continue
                row = {"case": f"{case}/T={T}", "impl": name, "seconds": seconds, "T": T}
                if name == "dense-cholesky-torch":
                    refs[(case, T)] = out
                ref = refs.get((case, T))
                if ref is not None and name != "dense-cholesky-torch":
                    if case == "lml_grad":
                        row["max_abs_diff"] = abs(out[0] - ref[0])
                        row["rel_diff"] = row["max_abs_diff"] / abs(ref[0])
                        if out[1] is not None:
                            row["grad_max_abs_diff"] = float(np.max(np.abs(out[1] - ref[1])))
                    else:
                        row["max_abs_diff"] = float(max(np.max(np.abs(out[0] - ref[0])),
                                                        np.max(np.abs(out[1] - ref[1]))))
                rows.append(row)
                print(json.dumps(row))
                # stop growing T once the next size's predicted time exceeds the budget
                nxt = [s for s in sizes if s > T]
                if nxt and seconds * (nxt[0] / T) ** GROWTH.get(name, 1) > budget:
                    stopped.add(key)
    return rows


def print_table(rows: list[dict]) -> None:
    print_fit_table([r for r in rows if r["case"].startswith("fit/")])
    rows = [r for r in rows if not r["case"].startswith("fit/")]
    if not rows:
        return
    cases = sorted({r["case"] for r in rows}, key=lambda c: (c.split("/")[0], int(c.split("=")[1])))
    impls = list(dict.fromkeys(r["impl"] for r in rows))
    print("\n| case | " + " | ".join(impls) + " | exact/ssgp |")
    print("|---" * (len(impls) + 2) + "|")
    for case in cases:
        sec = {r["impl"]: r["seconds"] for r in rows if r["case"] == case}
        cells = [f"{sec[i]:.4g}" if i in sec else "-" for i in impls]
        exact = [sec[i] for i in ("dense-cholesky-torch", "scikit-learn", "gpytorch-exact")
                 if i in sec]
        fast = [sec[i] for i in ("dynvae-ssgp-sequential", "dynvae-ssgp-parallel",
                                 "dynvae-ssgp-fisher") if i in sec]
        ratio = f"{min(exact) / min(fast):.1f}x" if exact and fast else "-"
        print(f"| {case} | " + " | ".join(cells) + f" | {ratio} |")
    for impl in ("dynvae-ssgp-sequential", "dynvae-ssgp-parallel", "dynvae-ssgp-fisher"):
        for case in ("lml_grad", "posterior"):
            pts = [(r["T"], r["seconds"]) for r in rows
                   if r["impl"] == impl and r["case"].startswith(case + "/") and r["T"] >= 1000]
            if len(pts) >= 2:
                slope = np.polyfit(np.log([p[0] for p in pts]), np.log([p[1] for p in pts]), 1)[0]
                print(f"log-log slope of {impl} {case} time vs T: {slope:.2f} "
                      f"(T = {pts[0][0]}..{pts[-1][0]})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, under a minute")
    ap.add_argument("--json", help="write the rows to this file")
    ap.add_argument("--sizes", type=int, nargs="*", help="override the list of T")
    ap.add_argument("--budget", type=float, default=240.0,
                    help="seconds one call may take before a method stops growing T")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    ap.add_argument("--cases", nargs="*", default=["scaling", "fit"],
                    help="'scaling' (lml_grad and posterior against T), 'fit' (CO2 end to end)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    sizes = args.sizes or ([300, 1000, 3000] if args.quick
                           else [1000, 3000, 10_000, 30_000, 100_000, 1_000_000, 10_000_000])
    rows = []
    if "scaling" in args.cases:
        rows += run_benchmark(sizes, repeats=3 if not args.quick else 1,
                              budget=args.budget if not args.quick else 12.0)
    if "fit" in args.cases:
        rows += run_fit_rows(args.quick)
    print_table(rows)
    if args.json:
        atomic_write_json(args.json, rows)


if __name__ == "__main__":
    main()
