"""LGSSM fitting time on many multichannel sequences: dynvae's default fit (L-BFGS with
Fisher-identity gradients on the native smoother), its EM, the previous default (L-BFGS
differentiating through the parallel scan), statsmodels and dynamax on the same model.

Cases (every channel standardised):
  synthetic  112 sequences x 350 steps x 6 channels of `synthetic-lgssm` (S = 3, 10 %
             of entries missing): the size of the report that took ~4 h to fit;
  daphnet    112 windows x 350 steps x 6 channels (ankle and thigh accelerometers) of
             aeon's Daphnet S06R02E0 recording (64 Hz), windows every 60 samples;
  basic_motions  80 x 100 x 6 accelerometer/gyroscope series (aeon);
  nile       the Nile flow (1 x 100 x 1), statsmodels' local level reference.
Model (dynvae's `dynvae train --model lgssm` default): a local level per channel,
z_t = z_{t-1} + w_t, x_t = z_t + v_t with full Q and R, approximate diffuse start
(kappa = 1e6, first observed step not scored). Peers:
  statsmodels  the same model as an `MLEModel` (`approximate_diffuse`, burn 1); the
               joint log-likelihood of all sequences is the sum of each sequence's
               `loglike` (its Cython Kalman filter), maximised by scipy's L-BFGS-B with
               statsmodels' own numerical scores; on single sequences its `fit()`.
  dynamax      EM on the model it can fit (A, H, Q, R, m0, P0 all learned; no missing
               values), against dynvae's EM on that model from the same start and the
               same number of iterations; its jit compilation is timed separately.
Columns: seconds (wall), cpu_seconds (this process; other jobs share the machine),
iterations, log_likelihood_per_entry (dynvae's exact score of the fitted parameters),
gap_to_best (per entry, to the best impl of the case), converged.

    python benchmarks/lgssm_fit.py [--quick] [--json PATH]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from dynvae.data import SequenceDataset, Standardizer
from dynvae.data.dataset import Sequence
from dynvae.data.synthetic import synthetic_lgssm_dataset
from dynvae.models.lgssm import LGSSM, Config
from dynvae.models.lgssm_fit import LBFGS, FitConfig, fit_method
from dynvae.utils import atomic_write_json

TOL = 1e-9


def standardised(data: SequenceDataset) -> SequenceDataset:
    return Standardizer().fit(data).transform(data)


def from_array(x: np.ndarray, name: str) -> SequenceDataset:
    """(N, T, D) array -> dataset with unit steps."""
    seqs = [Sequence(np.arange(x.shape[1], dtype=np.float64), x[i], id=f"{name}{i}")
            for i in range(x.shape[0])]
    return SequenceDataset(seqs, [f"x{d}" for d in range(x.shape[2])])


def daphnet(n: int, T: int) -> SequenceDataset:
    import warnings

    from aeon.datasets import load_daphnet_s06r02e0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        X, _ = load_daphnet_s06r02e0()
    X = np.asarray(X, dtype=np.float64)[:, :6]                    # ankle + thigh, 3 axes
    starts = np.linspace(0, X.shape[0] - T, n).astype(int)
    return from_array(np.stack([X[s:s + T] for s in starts]), "daphnet")


def basic_motions(n: int) -> SequenceDataset:
    from aeon.datasets import load_basic_motions
    X, _ = load_basic_motions()                                    # (80, 6, 100)
    return from_array(np.asarray(X, dtype=np.float64).transpose(0, 2, 1)[:n], "motion")


def nile() -> SequenceDataset:
    import statsmodels.api as sm
    y = sm.datasets.nile.load_pandas().data["volume"].to_numpy(np.float64)
    return from_array(y[None, :, None], "nile")


def cases(quick: bool) -> dict:
    """--quick: a small synthetic set and the Nile only (under a minute)."""
    n, T = (8, 60) if quick else (112, 350)
    out = {f"synthetic {n}x{T}x6": lambda: synthetic_lgssm_dataset(
        n=n, T=T, S=3, D=6, missing=0.1, seed=0)}
    if not quick:
        out[f"daphnet {n}x{T}x6"] = lambda: daphnet(n, T)
        out["basic_motions 80x100x6"] = lambda: basic_motions(80)
    out["nile 1x100x1"] = nile
    return out


def clock(fn):
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - wall, time.process_time() - cpu


def score(model, batch) -> float:
    with torch.no_grad():
        return float(model.log_likelihood(batch).sum()) / float(model.scored_mask(batch).sum())


def dynvae_fit(batch, dim, method, gradient="fisher", max_iter=100, config=None):
    model = LGSSM(config or Config(), dim)
    fit = FitConfig(method=method, gradient=gradient, max_iter=max_iter, tol=TOL)

    def run():
        model.initialize_from_data(batch)
        return fit_method(method)(model, batch, fit, False)
    history, wall, cpu = clock(run)
    converged = len(history) - 1 < max_iter
    return model, {"seconds": wall, "cpu_seconds": cpu, "iterations": len(history) - 1,
                   "converged": converged}


def first_lbfgs_step(batch, dim) -> dict:
    """The previous default: one L-BFGS step (up to 20 iterations) with autograd through
    the parallel scan; its time is what a user waited for the first progress update."""
    model = LGSSM(Config(inference="parallel"), dim)
    model.initialize_from_data(batch)
    _, wall, cpu = clock(lambda: model.fit_gradient(batch, LBFGS(), steps=1, progress=False,
                                                    gradient="autograd"))
    return {"seconds_first_step": wall, "cpu_seconds": cpu, "iterations": 1}


# ----------------------------------------------------------------------- statsmodels
def statsmodels_local_level():
    """statsmodels' MLEModel of the multivariate local level with log-Cholesky Q and R
    (the parametrisation of dynvae's CholeskyCovariance)."""
    from statsmodels.tsa.statespace.mlemodel import MLEModel

    class MultivariateLocalLevel(MLEModel):
        def __init__(self, y):
            D = y.shape[1]
            super().__init__(y, k_states=D, k_posdef=D, initialization="approximate_diffuse",
                             initial_variance=1e6, loglikelihood_burn=1)
            self["design"], self["transition"] = np.eye(D), np.eye(D)
            self["selection"] = np.eye(D)
            self.rows, self.cols = np.tril_indices(D)

        def covariance(self, raw):
            L = np.zeros((self.k_endog, self.k_endog), dtype=raw.dtype)
            diag = self.rows == self.cols
            L[self.rows[~diag], self.cols[~diag]] = raw[~diag]
            L[self.rows[diag], self.cols[diag]] = np.exp(raw[diag])
            return L @ L.T

        def update(self, params, **kwargs):
            params = super().update(params, **kwargs)
            n = len(self.rows)
            self["state_cov"] = self.covariance(params[:n])
            self["obs_cov"] = self.covariance(params[n:])

        @property
        def start_params(self):
            return np.zeros(2 * len(self.rows))
    return MultivariateLocalLevel


def raw_params(model: LGSSM) -> np.ndarray:
    """dynvae's log-Cholesky parameters of Q then R, in statsmodels' tril order."""
    out = []
    for cov in (model.transition_cov, model.emission_cov):
        L = cov.cholesky().detach().numpy()
        rows, cols = np.tril_indices(L.shape[0])
        values = L[rows, cols]
        diag = rows == cols
        values[diag] = np.log(values[diag])
        out.append(values)
    return np.concatenate(out)


def set_raw_params(model: LGSSM, params: np.ndarray) -> None:
    half = len(params) // 2
    for cov, raw in ((model.transition_cov, params[:half]), (model.emission_cov, params[half:])):
        D = cov.raw_diag.shape[0]
        rows, cols = np.tril_indices(D)
        L = np.zeros((D, D))
        L[rows, cols] = np.where(rows == cols, np.exp(raw), raw)
        cov.assign(torch.tensor(L @ L.T))


def statsmodels_joint_fit(data: SequenceDataset, start: np.ndarray, budget: float) -> tuple:
    """Maximise the summed statsmodels log-likelihood of all sequences by L-BFGS-B with
    statsmodels' numerical scores; stops after ``budget`` seconds (converged False)."""
    from scipy.optimize import minimize
    cls = statsmodels_local_level()
    models = [cls(s.x) for s in data]
    stop = time.perf_counter() + budget
    state = {"converged": True}

    def objective(params):
        value = -sum(m.loglike(params) for m in models)
        grad = -sum(m.score(params) for m in models)
        return value, grad

    def callback(_):
        if time.perf_counter() > stop:
            state["converged"] = False
            raise StopIteration

    res, wall, cpu = clock(lambda: minimize(objective, start, jac=True, method="L-BFGS-B",
                                            callback=callback,
                                            options={"maxiter": 1000, "ftol": 1e-12}))
    return res.x, {"seconds": wall, "cpu_seconds": cpu, "iterations": int(res.nit),
                   "converged": state["converged"] and bool(res.success)}


def statsmodels_single_fit(y: np.ndarray, start: np.ndarray) -> tuple:
    cls = statsmodels_local_level()
    res, wall, cpu = clock(lambda: cls(y).fit(start, disp=False, maxiter=1000))
    return res.params, {"seconds": wall, "cpu_seconds": cpu,
                        "iterations": int(res.mle_retvals.get("iterations", -1)),
                        "converged": bool(res.mle_retvals.get("converged", False))}


# --------------------------------------------------------------------------- dynamax
def linear_model(S: int, D: int) -> LGSSM:
    return LGSSM(Config(state_dim=S, transition="linear", emission="linear", initial="learned"),
                 D)


def dynamax_em(model: LGSSM, x: np.ndarray, n_iters: int) -> tuple:
    """dynamax's EM from the parameters of ``model`` (a linear LGSSM); returns its final
    parameters loaded into a copy of ``model`` and the timings."""
    import copy

    import jax
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    from dynamax.linear_gaussian_ssm import LinearGaussianSSM
    S, D = model.state_dim, model.data_dim
    peer = LinearGaussianSSM(S, D, has_dynamics_bias=False, has_emissions_bias=False)
    m0, P0 = (v.detach().numpy() for v in model.initial.prior())
    j = lambda v: jnp.asarray(v.detach().numpy() if torch.is_tensor(v) else v)
    params, props = peer.initialize(
        initial_mean=j(m0), initial_covariance=j(P0), dynamics_weights=j(model.transition()),
        dynamics_covariance=j(model.transition_cov()), emission_weights=j(model.emission()),
        emission_covariance=j(model.emission_cov()))
    emissions = jnp.asarray(x)

    def run(n):
        out, lls = peer.fit_em(params, props, emissions, num_iters=n, verbose=False)
        jax.block_until_ready(lls)
        return out
    _, wall_one, _ = clock(lambda: run(1))                 # compilation + one iteration
    fitted, wall, cpu = clock(lambda: run(n_iters))
    result = copy.deepcopy(model)
    with torch.no_grad():
        t = lambda v: torch.tensor(np.asarray(v), dtype=torch.float64)
        result.transition.assign(t(fitted.dynamics.weights))
        result.transition_cov.assign(t(fitted.dynamics.cov))
        result.emission.assign(t(fitted.emissions.weights))
        result.emission_cov.assign(t(fitted.emissions.cov))
        result.initial.assign(t(fitted.initial.mean), t(fitted.initial.cov))
    return result, {"seconds": wall, "cpu_seconds": cpu, "iterations": n_iters,
                    "first_call_seconds": wall_one, "converged": False}


# ---------------------------------------------------------------------------- runner
def local_level_rows(name: str, data: SequenceDataset, quick: bool) -> list[dict]:
    batch, D = data.to_batch(dtype=torch.float64), data.dim
    rows = []

    def add(impl, model, info, case=name, b=batch):
        rows.append({"case": case, "impl": impl, **info,
                     "log_likelihood_per_entry": score(model, b)})
        print(f"  {case} {impl}: {info.get('seconds', info.get('seconds_first_step')):.2f} s",
              flush=True)

    model, info = dynvae_fit(batch, D, "lbfgs")
    add("dynvae (default: lbfgs, fisher)", model, info)
    add("dynvae em", *dynvae_fit(batch, D, "em", max_iter=100 if quick else 300))
    start = LGSSM(Config(), D)
    start.initialize_from_data(batch)
    try:
        fitted, info = statsmodels_joint_fit(data, raw_params(start), 5 if quick else 900)
        set_raw_params(start, fitted)
        add("statsmodels (summed loglike, L-BFGS-B)", start, info)
    except ImportError:
        print("  statsmodels not installed: skipped")
    rows.append({"case": name, "impl": "dynvae lbfgs autograd (previous default), first step",
                 **first_lbfgs_step(batch, D)})
    print(f"  {name} previous default first step: {rows[-1]['seconds_first_step']:.1f} s")
    if len(data) > 1 and not quick:
        one = data[[0]]
        b1 = one.to_batch(dtype=torch.float64)
        case1 = f"{name} [sequence 0 alone]"
        add("dynvae (default: lbfgs, fisher)", *dynvae_fit(b1, D, "lbfgs"), case=case1, b=b1)
        start = LGSSM(Config(), D)
        start.initialize_from_data(b1)
        try:
            fitted, info = statsmodels_single_fit(one[0].x, raw_params(start))
            set_raw_params(start, fitted)
            add("statsmodels MLEModel.fit", start, info, case=case1, b=b1)
        except ImportError:
            pass
    return rows


def dynamax_rows(name: str, data: SequenceDataset, quick: bool) -> list[dict]:
    if any(np.isnan(s.x).any() for s in data):
        print(f"  {name}: missing values, dynamax cannot fit it: skipped")
        return []
    try:
        import dynamax  # noqa: F401
    except ImportError:
        print("  dynamax not installed: skipped")
        return []
    # one sequence: dynamax's batched M-step of the initial covariance computes
    # (sum E[z0 z0^T] - (sum E[z0])(sum E[z0])^T) / N, which is not a covariance for
    # N > 1 sequences (NaN from its second iteration on these data)
    data = data[[0]]
    batch, D = data.to_batch(dtype=torch.float64), data.dim
    S, n_iters = min(3, D), (10 if quick else 50)
    case = f"{name} [sequence 0, linear S={S}, {n_iters} EM iterations]"
    start = linear_model(S, D)
    torch.manual_seed(0)
    start.initialize_from_data(batch)
    rows = []
    peer, info = dynamax_em(start, np.stack([s.x for s in data]), n_iters)
    rows.append({"case": case, "impl": "dynamax fit_em", **info,
                 "log_likelihood_per_entry": score(peer, batch)})
    ours = linear_model(S, D)
    ours.load_state_dict(start.state_dict())
    history, wall, cpu = clock(lambda: ours.fit_em(batch, n_iter=n_iters, tol=0,
                                                   progress=False))
    rows.append({"case": case, "impl": "dynvae em", "seconds": wall, "cpu_seconds": cpu,
                 "iterations": n_iters, "converged": False,
                 "log_likelihood_per_entry": score(ours, batch)})
    for r in rows:
        print(f"  {case} {r['impl']}: {r['seconds']:.2f} s", flush=True)
    return rows


def with_gaps(rows: list[dict]) -> list[dict]:
    for case in {r["case"] for r in rows}:
        lls = [r["log_likelihood_per_entry"] for r in rows
               if r["case"] == case and "log_likelihood_per_entry" in r]
        for r in rows:
            if r["case"] == case and "log_likelihood_per_entry" in r:
                r["gap_to_best"] = max(lls) - r["log_likelihood_per_entry"]
    return rows


def print_table(rows: list[dict]) -> None:
    print("\n| case | impl | seconds | cpu s | iterations | log-lik / entry | gap to best "
          "| converged | seconds / dynvae default |")
    print("|---|---|---|---|---|---|---|---|---|")
    for case in dict.fromkeys(r["case"] for r in rows):
        group = [r for r in rows if r["case"] == case]
        base = next((r["seconds"] for r in group if r["impl"].startswith("dynvae (default")),
                    None) or next((r["seconds"] for r in group if r["impl"] == "dynvae em"),
                                  None)
        for r in group:
            sec = r.get("seconds", r.get("seconds_first_step"))
            ll = r.get("log_likelihood_per_entry")
            gap = r.get("gap_to_best")
            ratio = f"{sec / base:.2f}x" if base else "-"
            done = "-" if "converged" not in r else ("yes" if r["converged"] else "no")
            print(f"| {case} | {r['impl']} | {sec:.2f} | {r['cpu_seconds']:.2f} | "
                  f"{r['iterations']} | {'-' if ll is None else f'{ll:.6f}'} | "
                  f"{'-' if gap is None else f'{gap:.1e}'} | {done} | {ratio} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, under a minute")
    ap.add_argument("--json", help="write the rows to this file")
    ap.add_argument("--cases", nargs="*", help="only cases whose name starts with these")
    args = ap.parse_args()
    torch.set_num_threads(1)
    rows = []
    for name, load in cases(args.quick).items():
        if args.cases and not any(name.startswith(c) for c in args.cases):
            continue
        try:
            data = standardised(load())
        except ImportError as err:
            print(f"{name}: {err.name} not installed: skipped")
            continue
        print(f"{name}:", flush=True)
        rows += local_level_rows(name, data, args.quick)
        rows += dynamax_rows(name, data, args.quick)
    print_table(with_gaps(rows))
    if args.json:
        atomic_write_json(args.json, rows)


if __name__ == "__main__":
    main()
