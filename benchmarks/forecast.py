"""Benchmark: forecasting real series with the data-aware state-space GP against
seasonal-naive and statsmodels, last-period hold-out.

Series (all shipped inside pip packages, no download):
  co2            statsmodels Mauna Loa CO2, weekly, 59 missing; hold out the last 52 weeks
  seattle-temps  vega_datasets hourly temperature 2010; hold out the last week (168 h)
  sunspots       statsmodels yearly sunspot numbers 1700-2008; hold out the last 11 years
  sp500          arch S&P 500 daily close 1999-2018 (trading days); hold out 21 days
The season m (52, 24, 11, 1) sets the seasonal-naive forecast (m = 1: the last value).

Implementations, each fitted on the training part only, with one setting for every series:
  dynvae-gp-auto      ``dynvae gp --kernel auto`` (kernel search by BIC, data-aware start)
  dynvae-gp-matern52  the former defaults: Matern-5/2, length-scale span/20, noise 0.1
  seasonal-naive      y_{T+h} = y_{T+h-m(k+1)}, k = floor((h-1)/m); Gaussian band with
                      sd sigma sqrt(k+1) from the in-sample seasonal differences
  statsmodels-uc      UnobservedComponents: local linear trend + trigonometric season
                      (3 harmonics) + AR(1), exact Kalman MLE
  statsmodels-ets     ETSModel: additive error, damped additive trend, additive season
  statsmodels-sarimax SARIMAX(1,1,1)(0,1,1,m) (ARIMA(1,1,1) when m = 1)
Training values are linearly interpolated across missing entries for the models that do not
accept NaN (seasonal-naive, ETS); the GP, UC and SARIMAX take them as missing.

Metrics on the hold-out: MASE (mean absolute error over the in-sample MAE of the
seasonal-naive one-season-ahead forecast; Hyndman and Koehler 2006), CRPS of the Gaussian
predictive (closed form, Gneiting and Raftery 2007), coverage of the central 90% interval,
RMSE. ``seconds`` is fit + forecast.

    python benchmarks/forecast.py [--quick] [--json PATH] [--series co2 sunspots]
"""

from __future__ import annotations

import argparse
import json
import math
import time
import warnings
from dataclasses import dataclass

import numpy as np
import torch

from dynvae.utils import atomic_write_json

Z90 = 1.6448536269514722


@dataclass
class Series:
    name: str
    t: np.ndarray        # (T,) times, in the unit a user would pass to dynvae gp
    y: np.ndarray        # (T,) values, NaN missing
    season: int          # seasonal lag in steps
    horizon: int         # held-out steps at the end


def load_series(name: str) -> Series:
    if name == "co2":
        from dynvae.data import load_dataset
        seq = load_dataset("co2").sequences[0]
        return Series(name, seq.t, seq.x[:, 0], 52, 52)
    if name == "seattle-temps":
        from vega_datasets import local_data
        frame = local_data.seattle_temps()
        t = (frame["date"] - frame["date"].iloc[0]).dt.total_seconds().to_numpy() / 86400.0
        return Series(name, t, frame["temp"].to_numpy(np.float64), 24, 168)
    if name == "sunspots":
        import statsmodels.api as sm
        frame = sm.datasets.sunspots.load_pandas().data
        return Series(name, frame["YEAR"].to_numpy(np.float64),
                      frame["SUNACTIVITY"].to_numpy(np.float64), 11, 11)
    if name == "sp500":
        from arch.data import sp500
        frame = sp500.load()
        t = ((frame.index - frame.index[0]) / np.timedelta64(1, "D")).to_numpy(np.float64)
        return Series(name, t, frame["Adj Close"].to_numpy(np.float64), 1, 21)
    raise SystemExit(f"unknown series {name!r}")


# ------------------------------------------------------------------------------ metrics
def seasonal_scale(y: np.ndarray, m: int) -> float:
    """In-sample MAE of the seasonal-naive forecast, the MASE denominator."""
    d = np.abs(y[m:] - y[:-m])
    return float(np.nanmean(d))


def crps_gaussian(y: np.ndarray, mu: np.ndarray, sd: np.ndarray) -> np.ndarray:
    """CRPS of N(mu, sd^2) at y: sd (z (2 Phi(z) - 1) + 2 phi(z) - 1/sqrt(pi))."""
    z = (y - mu) / sd
    phi = np.exp(-0.5 * z ** 2) / math.sqrt(2 * math.pi)
    cdf = 0.5 * (1 + np.vectorize(math.erf)(z / math.sqrt(2)))
    return sd * (z * (2 * cdf - 1) + 2 * phi - 1 / math.sqrt(math.pi))


def scores(y: np.ndarray, mu: np.ndarray, sd: np.ndarray, scale: float) -> dict:
    ok = np.isfinite(y)
    y, mu, sd = y[ok], mu[ok], np.maximum(sd[ok], 1e-12)
    return {"mase": float(np.mean(np.abs(y - mu)) / scale),
            "crps": float(np.mean(crps_gaussian(y, mu, sd))),
            "coverage90": float(np.mean(np.abs(y - mu) <= Z90 * sd)),
            "rmse": float(np.sqrt(np.mean((y - mu) ** 2)))}


def filled(y: np.ndarray) -> np.ndarray:
    """Missing entries linearly interpolated (for models that do not take NaN)."""
    idx = np.arange(len(y))
    ok = np.isfinite(y)
    return np.interp(idx, idx[ok], y[ok])


# ------------------------------------------------------------------------ forecasters
def seasonal_naive(s: Series, train: slice, test: slice):
    y = filled(s.y[train])
    m, h = s.season, np.arange(1, s.y[test].size + 1)
    k = (h - 1) // m
    mu = y[len(y) - m + (h - 1) % m]
    resid = y[m:] - y[:-m]
    sigma = float(np.sqrt(np.mean(resid ** 2)))
    return mu, sigma * np.sqrt(k + 1)


def dynvae_gp(kernel: str):
    def run(s: Series, train: slice, test: slice):
        from dynvae.gp.auto import FitOptions, fit_to_data
        from dynvae.gp.inference import FisherKalman
        y = s.y[train]
        center, scale = np.nanmean(y), np.nanstd(y)
        t = torch.tensor(s.t[train])
        x = torch.tensor((y - center) / scale)[:, None]
        if kernel == "former-default":
            from dynvae.gp.kernels import Matern52
            from dynvae.gp.mean import ConstantMean
            from dynvae.gp.regression import StateSpaceGP
            span = float(t[-1] - t[0])
            gp = StateSpaceGP(Matern52(span / 20), 1, 0.1, FisherKalman(), ConstantMean())
            gp.fit(t, x, max_iter=100)
        else:
            gp = fit_to_data(t, x, FitOptions(kernel=kernel), FisherKalman()).gp
        with torch.no_grad():
            pred = gp.predict(torch.tensor(s.t[test]))
        sd = torch.sqrt(pred.variance[:, 0] + pred.noise_variance[0]).numpy() * scale
        return pred.mean[:, 0].numpy() * scale + center, sd
    return run


def statsmodels_uc(s: Series, train: slice, test: slice):
    from statsmodels.tsa.statespace.structural import UnobservedComponents
    seasonal = ([{"period": s.season, "harmonics": min(3, s.season // 2)}]
                if s.season > 1 else None)
    model = UnobservedComponents(s.y[train], level="local linear trend",
                                 freq_seasonal=seasonal, autoregressive=1)
    res = model.fit(disp=False, maxiter=200)
    fc = res.get_forecast(s.y[test].size)
    return fc.predicted_mean, np.sqrt(fc.var_pred_mean)


def statsmodels_ets(s: Series, train: slice, test: slice):
    import pandas as pd
    from statsmodels.tsa.exponential_smoothing.ets import ETSModel
    y = pd.Series(filled(s.y[train]))
    seasonal = dict(seasonal="add", seasonal_periods=s.season) if s.season > 1 else {}
    res = ETSModel(y, error="add", trend="add", damped_trend=True,
                   initialization_method="heuristic" if seasonal else "estimated",
                   **seasonal).fit(disp=False, maxiter=200)
    pred = res.get_prediction(start=len(y), end=len(y) + s.y[test].size - 1)
    return np.asarray(pred.predicted_mean), np.sqrt(np.asarray(pred.var_pred_mean))


def statsmodels_sarimax(s: Series, train: slice, test: slice):
    from statsmodels.tsa.statespace.sarimax import SARIMAX
    seasonal = (0, 1, 1, s.season) if s.season > 1 else (0, 0, 0, 0)
    res = SARIMAX(s.y[train], order=(1, 1, 1), seasonal_order=seasonal).fit(disp=False,
                                                                            maxiter=200)
    fc = res.get_forecast(s.y[test].size)
    return fc.predicted_mean, np.sqrt(fc.var_pred_mean)


IMPLEMENTATIONS = {
    "dynvae-gp-auto": dynvae_gp("auto"),
    "dynvae-gp-matern52": dynvae_gp("former-default"),
    "seasonal-naive": seasonal_naive,
    "statsmodels-uc": statsmodels_uc,
    "statsmodels-ets": statsmodels_ets,
    "statsmodels-sarimax": statsmodels_sarimax,
}
PEERS = ("statsmodels-uc", "statsmodels-ets", "statsmodels-sarimax")


def run_series(s: Series, impls: list[str]) -> list[dict]:
    n = len(s.y)
    train, test = slice(0, n - s.horizon), slice(n - s.horizon, n)
    scale = seasonal_scale(filled(s.y[train]), s.season)
    rows = []
    for name in impls:
        start = time.perf_counter()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                mu, sd = IMPLEMENTATIONS[name](s, train, test)
        except ImportError as err:
            print(f"skip {name} on {s.name}: {err}")
            continue
        row = {"case": s.name, "impl": name, "seconds": time.perf_counter() - start,
               "n_train": n - s.horizon, "horizon": s.horizon, "season": s.season,
               **scores(s.y[test], np.asarray(mu), np.asarray(sd), scale)}
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def print_table(rows: list[dict]) -> None:
    print("\n| series | impl | MASE | CRPS | 90% coverage | RMSE | seconds |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['case']} | {r['impl']} | {r['mase']:.3f} | {r['crps']:.4g} | "
              f"{r['coverage90']:.2f} | {r['rmse']:.4g} | {r['seconds']:.1f} |")
    print()
    for case in dict.fromkeys(r["case"] for r in rows):
        by = {r["impl"]: r for r in rows if r["case"] == case}
        gp = by.get("dynvae-gp-auto")
        peers = [by[p]["mase"] for p in PEERS if p in by]
        if gp is None:
            continue
        line = f"{case}: GP MASE / seasonal-naive {gp['mase'] / by['seasonal-naive']['mase']:.3f}"
        if peers:
            line += f", GP MASE / best statsmodels {gp['mase'] / min(peers):.3f}"
        print(line)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help="the last 600 points of co2 and sunspots, GP and seasonal-naive only")
    ap.add_argument("--json", help="write the rows to this file")
    ap.add_argument("--series", nargs="*",
                    default=["co2", "seattle-temps", "sunspots", "sp500"])
    ap.add_argument("--impls", nargs="*", default=list(IMPLEMENTATIONS))
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    names = ["co2", "sunspots"] if args.quick else args.series
    impls = ["dynvae-gp-auto", "seasonal-naive"] if args.quick else args.impls
    for name in names:
        s = load_series(name)
        if args.quick:
            s = Series(s.name, s.t[-600:], s.y[-600:], s.season, s.horizon)
        rows += run_series(s, impls)
    print_table(rows)
    if args.json:
        atomic_write_json(args.json, rows)


if __name__ == "__main__":
    main()
