"""``dynvae gp``: state-space GP regression of a table's columns on (irregular) times.

Fits the kernel's hyperparameters and the noise by maximising the exact log marginal
likelihood (Kalman filter, O(T)), jointly with the prior mean's parameters (--mean), then
writes ``RUN/predictions.csv`` (posterior mean, latent std and 95% predictive band on the
training times and a regular grid that extends ``--extrapolate`` time units past the
data), ``RUN/metrics.json``, ``RUN/config.json`` and ``RUN/plots/gp.png``. Values are
standardised per column before fitting; the reported log marginal likelihood and the
mean's parameters are on the original scale.

Far from the data a stationary kernel reverts to the prior mean, so --mean decides what
extrapolation tends to: 'constant' (default) the learned level of the data, 'linear' a
learned straight-line trend (for series that keep rising, e.g. CO2), 'zero' the column
mean used for standardising.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from dynvae.data.dataset import column_moments
from dynvae.errors import ConfigError, DataError
from dynvae.gp.inference import ENGINES
from dynvae.gp.kernels import KernelInit, parse_kernel
from dynvae.gp.mean import MEANS
from dynvae.gp.plotting import plot_gp_fit
from dynvae.gp.regression import StateSpaceGP
from dynvae.train import run as rundir
from dynvae.utils import atomic_write_json, atomic_write_text

# the files of a gp run: what --force replaces
ARTEFACTS = ("predictions.csv", "metrics.json", "config.json", "plots/gp.png", ".*.tmp",
             "plots/.*.tmp")
# default period by time unit: a year, for dates (days) and decimal years
DEFAULT_PERIOD = {"days": 365.25, "years": 1.0}


@dataclass
class GPConfig:
    """Resolved configuration of one ``dynvae gp`` run."""

    data: str | None
    dataset: str | None
    time_col: str | None
    date_format: str | None = None
    value_cols: list[str] = field(default_factory=list)
    kernel: str = "matern52"
    out: str = "runs/gp"
    period: float | None = None
    lengthscale: float | None = None
    order: int = 6
    noise: float = 0.1
    max_iter: int = 100
    engine: str = "parallel"
    extrapolate: float = 0.0
    grid_points: int = 1000
    mean: str = "constant"
    force: bool = False


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("gp", help="state-space GP regression on irregular times (O(T))",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", help="CSV / Parquet / NumPy table")
    src.add_argument("--dataset", help="built-in dataset name instead of --data (e.g. co2)")
    p.add_argument("--time-col", help="time column (numbers or dates; dates become days)")
    p.add_argument("--date-format", metavar="FMT", help="format of the dates in the time "
                   "column, e.g. %%d/%%m/%%Y (needed when dates read two ways)")
    p.add_argument("--value-col", dest="value_cols", action="append", default=[],
                   help="value column (repeat for several independent outputs)")
    p.add_argument("--kernel", default="matern52",
                   help="sum of products of kernel names, e.g. 'matern52+quasiperiodic'")
    p.add_argument("--out", required=True, help="run directory")
    p.add_argument("--period", type=float, help="initial period (default: one year for dates "
                   "and decimal years, else a tenth of the time span)")
    p.add_argument("--lengthscale", type=float, help="initial Matern length-scale "
                   "(default: a twentieth of the time span)")
    p.add_argument("--order", type=int, default=6, help="periodic series order")
    p.add_argument("--noise", type=float, default=0.1,
                   help="initial noise variance (standardised units)")
    p.add_argument("--max-iter", type=int, default=100, help="L-BFGS iterations")
    p.add_argument("--engine", choices=sorted(ENGINES), default="parallel",
                   help="Kalman engine")
    p.add_argument("--extrapolate", type=float, default=0.0,
                   help="predict this far (time units) beyond the last time")
    p.add_argument("--grid-points", type=int, default=1000, help="regular prediction points")
    p.add_argument("--mean", choices=list(MEANS), default="constant",
                   help="prior mean learned with the kernel: 'constant' (default) makes "
                   "extrapolation revert to a learned level, 'linear' continue a learned "
                   "straight-line trend, 'zero' revert to the data's average")
    p.add_argument("--force", action="store_true", help="replace an existing run")
    p.add_argument("--overwrite", dest="force", action="store_true", help=argparse.SUPPRESS)
    p.set_defaults(run=run)


def load_table(cfg: GPConfig):
    """The single sequence to fit, from --data or --dataset."""
    if cfg.data is not None:
        from dynvae.data import read_table
        ds = read_table(cfg.data, time_col=cfg.time_col, value_cols=cfg.value_cols or None,
                        date_format=cfg.date_format)
    else:
        from dynvae.data import load_dataset
        ds = load_dataset(cfg.dataset)
        if cfg.value_cols:
            missing = [c for c in cfg.value_cols if c not in ds.feature_names]
            if missing:
                raise DataError(f"unknown value column(s) {missing}; have {ds.feature_names}")
    if len(ds.sequences) != 1:
        raise DataError(f"dynvae gp fits one sequence; the table holds {len(ds.sequences)}")
    seq = ds.sequences[0]
    cols = [ds.feature_names.index(c) for c in cfg.value_cols] if cfg.value_cols else \
        list(range(len(ds.feature_names)))
    names = [ds.feature_names[c] for c in cols]
    return ds, seq.t, seq.x[:, cols], names


def run(args: argparse.Namespace) -> int:
    cfg = GPConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(GPConfig)})
    out = rundir.check_run_dir(cfg.out, cfg.force)
    for name, value in (("--max-iter", cfg.max_iter), ("--grid-points", cfg.grid_points)):
        if value < 1:
            raise ConfigError(f"{name} must be >= 1, got {value}")
    ds, t_np, x_np, names = load_table(cfg)
    span = float(t_np[-1] - t_np[0]) or 1.0
    cfg.period = cfg.period or DEFAULT_PERIOD.get(ds.time_unit, span / 10)
    cfg.lengthscale = cfg.lengthscale or span / 20
    kernel = parse_kernel(cfg.kernel, KernelInit(lengthscale=cfg.lengthscale, period=cfg.period,
                                                 order=cfg.order))
    center, scale = column_moments(x_np, names)
    t = torch.as_tensor(t_np, dtype=torch.float64)
    x = torch.as_tensor((x_np - center) / scale, dtype=torch.float64)
    gp = StateSpaceGP(kernel, num_outputs=x.shape[1], noise_variance=cfg.noise,
                      engine=ENGINES[cfg.engine](), mean=MEANS[cfg.mean]())
    fit = gp.fit(t, x, max_iter=cfg.max_iter)
    grid = np.linspace(t_np[0], t_np[-1] + cfg.extrapolate, cfg.grid_points)
    t_pred = torch.as_tensor(np.union1d(t_np, grid), dtype=torch.float64)
    with torch.no_grad():
        pred = gp.predict(t_pred)
    mean = pred.mean.numpy() * scale + center
    std = pred.variance.clamp_min(0).sqrt().numpy() * scale
    band = 1.959963984540054 * np.sqrt(pred.variance.clamp_min(0).numpy()
                                       + pred.noise_variance.numpy()) * scale
    with rundir.open_run_dir(out, cfg.force, artefacts=ARTEFACTS, folders=("plots",)):
        write_outputs(out, cfg, ds, t_np, x_np, names, pred.t.numpy(), mean, std, band, gp,
                      fit, center, scale)
    print(f"dynvae gp: log marginal likelihood {fit.log_marginal_likelihood - _jac(x, scale):.3f}"
          f" after {fit.n_evaluations} evaluations; wrote {out}")
    return 0


def _jac(x: torch.Tensor, scale: np.ndarray) -> float:
    """log|d x_std / d x| correction: sum over observed entries of log(scale)."""
    n_obs = (~torch.isnan(x)).sum(0).numpy()
    return float((n_obs * np.log(scale)).sum())


def write_outputs(out, cfg, ds, t_np, x_np, names, t_pred, mean, std, band, gp, fit, center,
                  scale):
    observed = np.full((len(t_pred), len(names)), np.nan)
    rows = np.searchsorted(t_pred, t_np)
    observed[rows] = x_np
    frame = {"time": t_pred}
    if ds.time_origin is not None:
        frame["timestamp"] = ds.to_timestamps(t_pred)
    for d, name in enumerate(names):
        frame.update({f"{name}_observed": observed[:, d], f"{name}_mean": mean[:, d],
                      f"{name}_std": std[:, d], f"{name}_lower": mean[:, d] - band[:, d],
                      f"{name}_upper": mean[:, d] + band[:, d]})
    atomic_write_text(out / "predictions.csv", pd.DataFrame(frame).to_csv(index=False))
    x = torch.as_tensor(x_np)
    metrics = {"log_marginal_likelihood": fit.log_marginal_likelihood - _jac(x, scale),
               "log_marginal_likelihood_standardized": fit.log_marginal_likelihood,
               "n_observed": int(np.isfinite(x_np).sum()), "n_times": len(t_np),
               "n_evaluations": fit.n_evaluations}
    metrics.update({f"hyperparameter.{k}": v for k, v in gp.hyperparameters().items()})
    for d, m in enumerate(gp.means):
        prefix = f"mean.output{d}." if len(names) > 1 else "mean."
        metrics.update({prefix + k: v for k, v in
                        m.rescaled(float(center[d]), float(scale[d])).items()})
    metrics = {k: (v if math.isfinite(v) else None) for k, v in metrics.items()}
    atomic_write_json(out / "metrics.json", metrics)
    atomic_write_json(out / "config.json", dataclasses.asdict(cfg))
    unit = ds.time_unit or "time"
    if ds.time_origin is not None:
        unit = f"{unit} since {ds.time_origin}"
    plot_gp_fit(out / "plots" / "gp.png", t_np, x_np, t_pred, mean, mean - band, mean + band,
                names, time_label=unit, title=f"state-space GP, kernel {cfg.kernel}",
                train_range=(float(t_np[0]), float(t_np[-1])))
