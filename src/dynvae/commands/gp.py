"""``dynvae gp``: state-space GP regression of a table's columns on (irregular) times.

Fits the kernel's hyperparameters and the noise by maximising the exact log marginal
likelihood (Kalman filter, O(T)), jointly with the prior mean's parameters (--mean), then
writes ``RUN/predictions.csv`` (posterior mean, latent std and 95% predictive band on the
training times and a regular grid that extends ``--extrapolate`` time units past the
data), ``RUN/metrics.json``, ``RUN/config.json`` and ``RUN/plots/gp.png``. Values are
standardised per column before fitting; the reported log marginal likelihood and the
mean's parameters are on the original scale.

Kernels: '--kernel auto' (the default) searches sums of Matern, periodic and quasi-periodic
kernels by BIC and reports the one chosen; a spec such as 'matern52+quasiperiodic' or
'matern52 + periodic(24) + periodic(168)' fixes the structure. What the spec leaves open
starts from the data: Matern length-scales from the series' decorrelation time, periods
from --period (e.g. '1,7': one per periodic part, in order) then the periodogram's peaks,
the noise from second differences. Dates become --time-unit (default days) since the
first timestamp.

Far from the data a stationary kernel reverts to the prior mean, so --mean decides what
extrapolation tends to: 'constant' the learned level of the data, 'linear' a learned
straight-line trend (for series that keep rising, e.g. CO2), 'zero' the column mean used
for standardising. With --kernel auto the search picks constant or linear by BIC unless
--mean is given; with a kernel spec the default is constant.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from dynvae.commands import common
from dynvae.errors import ConfigError, DataError

if TYPE_CHECKING:
    import numpy as np
    import torch

# units a time parsed from dates may take (dynvae.data.dataset.TIME_UNITS; kept here so
# that `dynvae gp --help` imports no data stack)
TIME_UNITS = ("days", "hours", "minutes", "seconds")
ENGINE_NAMES = ("auto", "fisher", "native", "parallel", "scalar", "sequential")
MEAN_NAMES = ("zero", "constant", "linear")

# the files of a gp run: what --force replaces
ARTEFACTS = ("predictions.csv", "metrics.json", "config.json", "plots/gp.png", ".*.tmp",
             "plots/.*.tmp")


@dataclass
class GPConfig:
    """Resolved configuration of one ``dynvae gp`` run."""

    data: str | None
    dataset: str | None
    time_col: str | None
    date_format: str | None = None
    value_cols: list[str] = field(default_factory=list)
    kernel: str = "auto"
    out: str = "runs/gp"
    period: list[float] = field(default_factory=list)
    lengthscale: float | None = None
    order: int = 3
    noise: float | None = None
    max_iter: int = 100
    engine: str = "auto"
    extrapolate: float = 0.0
    grid_points: int = 1000
    mean: str | None = None
    time_unit: str | None = None
    force: bool = False
    # resolved by the run
    kernel_fitted: str | None = None
    periods_used: list[list] = field(default_factory=list)


def period_list(text: str) -> list[float]:
    """'1,7' -> [1.0, 7.0]: positive, finite periods."""
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"periods must be numbers separated by commas, got "
                                         f"{text!r}") from None
    if not all(v > 0 and math.isfinite(v) for v in values):
        raise argparse.ArgumentTypeError(f"periods must be positive and finite, got {text!r}")
    return values


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("gp", help="state-space GP regression on irregular times (O(T))",
                       description=__doc__.replace("``", ""),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", metavar="FILE", help="CSV / Parquet / NumPy table")
    src.add_argument("--dataset", metavar="NAME", help="built-in dataset name instead of "
                     "--data (e.g. co2)")
    p.add_argument("--time-col", metavar="C", help="time column (numbers, or dates: see "
                   "--time-unit)")
    p.add_argument("--date-format", metavar="FMT", help="format of the dates in the time "
                   "column, e.g. %%d/%%m/%%Y (needed when dates read two ways)")
    p.add_argument("--time-unit", choices=TIME_UNITS,
                   help="unit of times parsed from dates or durations (default days); "
                   "periods, length-scales and --extrapolate are in this unit")
    p.add_argument("--value-cols", action=common.ColumnList, default=[], metavar="A,B",
                   help="comma-separated value columns, each fitted as an independent GP "
                   "(default: every numeric column but the time)")
    p.add_argument("--value-col", dest="value_cols", action=common.DeprecatedColumn,
                   help=argparse.SUPPRESS)
    p.add_argument("--kernel", default="auto", metavar="SPEC",
                   help="'auto' (search by BIC, default) or a sum of products of kernels, "
                   "e.g. 'matern52+quasiperiodic', 'matern52 + periodic(1) + periodic(7)'")
    p.add_argument("--out", required=True, metavar="RUN", help="run directory to write")
    p.add_argument("--period", type=period_list, default=[], metavar="P1,P2",
                   help="initial period(s), comma-separated, one per periodic part in order "
                   "(default: the periodogram's peaks)")
    p.add_argument("--lengthscale", type=float, help="initial Matern length-scale "
                   "(default: the decorrelation time of the de-seasonalised data)")
    p.add_argument("--order", type=int, default=3,
                   help="periodic series order (harmonics; default 3)")
    p.add_argument("--noise", type=float, help="initial noise variance (standardised units; "
                   "default: from second differences of the data)")
    p.add_argument("--max-iter", type=int, default=100, help="L-BFGS iterations (default 100)")
    p.add_argument("--engine", default="auto", metavar="NAME",
                   help=f"Kalman engine: {', '.join(ENGINE_NAMES)} (default auto: the "
                   "fastest valid one, see docs/engines.md)")
    p.add_argument("--extrapolate", type=float, default=0.0,
                   help="predict this far (time units) beyond the last time "
                   "(default 0)")
    p.add_argument("--grid-points", type=int, default=1000,
                   help="regular prediction points (default 1000)")
    p.add_argument("--mean", metavar="NAME",
                   help="prior mean learned with the kernel: 'constant' makes extrapolation "
                   "revert to a learned level, 'linear' continue a learned straight-line "
                   "trend, 'zero' revert to the data's average (default: constant or linear "
                   "by BIC with --kernel auto, else constant)")
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
    if cfg.time_unit is not None:
        ds = ds.with_time_unit(cfg.time_unit)
    seq = ds.sequences[0]
    cols = [ds.feature_names.index(c) for c in cfg.value_cols] if cfg.value_cols else \
        list(range(len(ds.feature_names)))
    names = [ds.feature_names[c] for c in cols]
    return ds, seq.t, seq.x[:, cols], names


def prediction_grid(t: np.ndarray, extrapolate: float, points: int) -> np.ndarray:
    """At most ``points`` regular times from the first time to ``extrapolate`` past the
    last: where the data's grid (dynvae.data.timing.grid_step) has more times than that,
    every k-th of them and the end, so that they fall on the data's times (weekly co2:
    every third week, not every 15.998 days); else ``points`` evenly spaced times,
    denser than the data."""
    import numpy as np

    from dynvae.data.timing import grid_step
    end = t[-1] + extrapolate
    if len(t) > 1 and points > 2:                       # t strictly increases
        step = grid_step(np.diff(t))
        k = int(np.ceil((end - t[0]) / step / (points - 2)))    # room for the end
        if k >= 2:
            grid = t[0] + k * step * np.arange(int(np.floor((end - t[0]) / (k * step))) + 1)
            grid = np.union1d(grid, [end])                      # the end asked for, exactly
            if len(grid) <= points:
                return grid
    return np.linspace(t[0], end, points)


def run(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from dynvae.data.dataset import column_moments
    from dynvae.gp.auto import FitOptions, fit_to_data
    from dynvae.gp.inference import ENGINES
    from dynvae.gp.mean import MEANS
    from dynvae.train import run as rundir
    cfg = GPConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(GPConfig)
                      if hasattr(args, f.name)})
    out = rundir.check_run_dir(cfg.out, cfg.force)
    for name, value, least in (("--max-iter", cfg.max_iter, 1),
                               ("--grid-points", cfg.grid_points, 2), ("--order", cfg.order, 1)):
        if value < least:
            raise ConfigError(f"{name} must be >= {least}, got {value}")
    if not (cfg.extrapolate >= 0 and math.isfinite(cfg.extrapolate)):
        raise ConfigError(f"--extrapolate must be a finite time >= 0 past the last time, got "
                          f"{cfg.extrapolate}")
    for name, value, known in (("--engine", cfg.engine, ENGINES), ("--mean", cfg.mean, MEANS)):
        if value is not None and value not in known:
            raise ConfigError(f"unknown {name} {value!r}; choose one of {sorted(known)}")
    for name, value in (("--lengthscale", cfg.lengthscale), ("--noise", cfg.noise)):
        if value is not None and not (value > 0 and math.isfinite(value)):
            raise ConfigError(f"{name} must be positive and finite, got {value}")
    ds, t_np, x_np, names = load_table(cfg)
    cfg.time_unit = ds.time_unit
    center, scale = column_moments(x_np, names)
    t = torch.as_tensor(t_np, dtype=torch.float64)
    x = torch.as_tensor((x_np - center) / scale, dtype=torch.float64)
    jacobian = _jac(x, scale)
    options = FitOptions(kernel=cfg.kernel, periods=tuple(cfg.period),
                         lengthscale=cfg.lengthscale, noise=cfg.noise, order=cfg.order,
                         mean=cfg.mean, max_iter=cfg.max_iter)
    print(f"dynvae gp: {len(t_np)} times over {float(t_np[-1] - t_np[0]):.6g} "
          f"{ds.time_unit or 'time units'}, {len(names)} output(s); kernel {cfg.kernel}",
          flush=True)
    start = time.perf_counter()
    fitted = fit_to_data(t, x, options, ENGINES[cfg.engine](),
                         report=lambda line: print(f"{line}  [{time.perf_counter() - start:.1f} s]",
                                                   flush=True),
                         lml_offset=-jacobian)
    gp, fit = fitted.gp, fitted.fit
    report_convergence(fit, cfg.max_iter)
    cfg.kernel_fitted = fitted.spec
    cfg.mean = next(name for name, cls in MEANS.items() if type(gp.means[0]) is cls)
    cfg.periods_used = [[p, source] for p, source in fitted.period_sources]
    grid = prediction_grid(t_np, cfg.extrapolate, cfg.grid_points)
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
    periods = ", ".join(f"{p:.6g} ({source})" for p, source in fitted.period_sources)
    print(f"dynvae gp: kernel {fitted.spec}" + (f"; periods started at {periods}" if periods
                                                  else ""))
    print(f"dynvae gp: log marginal likelihood {fit.log_marginal_likelihood - jacobian:.3f}"
          f" after {fit.n_evaluations} evaluations; wrote {out}")
    return 0


def report_convergence(fit, max_iter: int) -> None:
    """One line saying whether L-BFGS stopped on its tolerances or at --max-iter."""
    if fit.converged is False:
        print(f"dynvae gp: L-BFGS stopped at --max-iter {max_iter} iterations before "
              "converging; a larger --max-iter may raise the likelihood")
    elif fit.converged:
        print(f"dynvae gp: L-BFGS converged ({fit.n_evaluations} evaluations)")


def _jac(x: torch.Tensor, scale: np.ndarray) -> float:
    """log|d x_std / d x| correction: sum over observed entries of log(scale)."""
    import numpy as np
    import torch
    n_obs = (~torch.isnan(x)).sum(0).numpy()
    return float((n_obs * np.log(scale)).sum())


def write_outputs(out, cfg, ds, t_np, x_np, names, t_pred, mean, std, band, gp, fit, center,
                  scale):
    import numpy as np
    import pandas as pd
    import torch

    from dynvae.data.export import time_column_name
    from dynvae.plots import plot_gp_fit
    from dynvae.utils import atomic_write_json, atomic_write_text
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
    shown = ds.to_timestamps if ds.time_origin is not None else np.asarray
    label = cfg.time_col or time_column_name(ds)
    if ds.time_unit is not None and ds.time_origin is None:
        label = f"{label} ({ds.time_unit})"
    plot_gp_fit(out / "plots" / "gp.png", shown(t_np), x_np, shown(t_pred), mean, mean - band,
                mean + band, names, time_label=label, title=f"state-space GP, kernel "
                f"{_short(cfg)}", train_end=shown(t_np[-1:])[0])


def _short(cfg: GPConfig) -> str:
    """The kernel for a plot title: the spec given, or for 'auto' the chosen structure."""
    if cfg.kernel.strip().lower() != "auto" or not cfg.kernel_fitted:
        return cfg.kernel
    from dynvae.gp.kernels.registry import split_spec
    terms = split_spec(cfg.kernel_fitted)
    return "auto: " + " + ".join("*".join(f.name + (f"({dict(f.values)['period']:.4g})"
                                                     if "period" in dict(f.values) else "")
                                          for f in term) for term in terms)
