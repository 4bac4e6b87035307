"""Baselines and scores of the model-quality benchmark (``quality.py``).

Everything here works on NumPy arrays on the data's original scale: ``x`` (B, T, D)
with NaN where missing, ``t`` (B, T), ``valid`` (B, T) for padding. Baselines:

* ``mean``: each feature's training mean (imputation and forecasts);
* ``locf``: last observation carried forward (the first observed value before it);
* ``linear``: linear interpolation in time between the neighbouring observed values
  (constant beyond the first and last one);
* ``seasonal-naive`` (forecasts): the value one season back, the season ``m`` being the
  first peak of the training autocorrelation of each sequence's residuals from its
  least-squares line (m = 1, the naive forecast, without one). Without removing the
  line, a trend (co2's) makes every lag correlate and the first small bump (29 weeks)
  passes for the season; with it, co2's is 52 weeks and the other sets' are unchanged.

A baseline's predictive spread is calibrated on the training data with the same
protocol as the test (entries hidden at random, final steps held out): a Gaussian
with each feature's RMSE as its std (at least STD_FLOOR of the data's); for binary
data a Bernoulli whose probability mixes the prediction with the feature's training
mean, the weight chosen by the training cross-entropy.
"""

from __future__ import annotations

import math

import numpy as np

NORMAL_90 = 1.6448536269514722   # the 95% quantile of N(0, 1): a central 90% interval
# a baseline's std is at least this share of the data's std: a feature that is constant
# in the training data (e.g. an image's corner pixel) would otherwise get a zero spread
STD_FLOOR = 1e-3
_SQRT_PI = math.sqrt(math.pi)


# ----------------------------------------------------------------- imputation
def impute_mean(x: np.ndarray, feature_mean: np.ndarray) -> np.ndarray:
    return np.broadcast_to(feature_mean, x.shape).copy()


def impute_locf(x: np.ndarray, t: np.ndarray, feature_mean: np.ndarray) -> np.ndarray:
    """Carry each feature's last observed value forward; before the first observation,
    carry that one backward; a feature never observed in a sequence gets its mean."""
    out = np.empty_like(x)
    B, T, D = x.shape
    idx = np.arange(T)
    for b in range(B):
        for d in range(D):
            seen = ~np.isnan(x[b, :, d])
            if not seen.any():
                out[b, :, d] = feature_mean[d]
                continue
            last = np.maximum.accumulate(np.where(seen, idx, -1))        # (T,)
            last = np.where(last < 0, int(np.argmax(seen)), last)
            out[b, :, d] = x[b, last, d]
    return out


def impute_linear(x: np.ndarray, t: np.ndarray, feature_mean: np.ndarray) -> np.ndarray:
    """Linear interpolation in time between each entry's observed neighbours."""
    out = np.empty_like(x)
    B, _, D = x.shape
    for b in range(B):
        for d in range(D):
            seen = ~np.isnan(x[b, :, d])
            out[b, :, d] = (np.interp(t[b], t[b, seen], x[b, seen, d]) if seen.any()
                            else feature_mean[d])
    return out


IMPUTERS = {
    "mean": lambda x, t, m: impute_mean(x, m),
    "locf": impute_locf,
    "linear": impute_linear,
}


# ------------------------------------------------------------------ forecasts
def detrended(x: np.ndarray) -> np.ndarray:
    """x (B, T, D) minus each sequence's and feature's least-squares line in the step
    index over its observed values (NaN kept; fewer than 3 values: unchanged)."""
    out = x.copy()
    k = np.arange(x.shape[1], dtype=float)
    for b, d in np.ndindex(x.shape[0], x.shape[2]):
        seen = ~np.isnan(x[b, :, d])
        if seen.sum() >= 3:
            slope, intercept = np.polyfit(k[seen], x[b, seen, d], 1)
            out[b, :, d] = x[b, :, d] - (slope * k + intercept)
    return out


def season_length(x: np.ndarray, valid: np.ndarray, max_lag: int = 200) -> int:
    """The first local maximum (lag >= 2) of the mean autocorrelation of the training
    sequences' residuals from their lines (:func:`detrended`) that exceeds 0.2, or 1
    when there is none. x (B, T, D) NaN where missing."""
    lags = min(max_lag, int(valid.sum(1).min()) // 2)
    if lags < 3:
        return 1
    x = detrended(x)
    z = (x - np.nanmean(x, (0, 1))) / np.nanstd(x, (0, 1)).clip(1e-12)
    acf = np.full(lags + 1, np.nan)
    for lag in range(1, lags + 1):
        prod = z[:, lag:] * z[:, :-lag]
        acf[lag] = np.nanmean(prod) if np.isfinite(prod).any() else np.nan
    for lag in range(2, lags):
        if acf[lag] > 0.2 and acf[lag] >= acf[lag - 1] and acf[lag] >= acf[lag + 1]:
            return lag
    return 1


def forecast_baseline(name: str, past: list[np.ndarray], horizon: int, feature_mean:
                      np.ndarray, season: int) -> np.ndarray:
    """(B, H, D) point forecasts from each sequence's past (T_b, D), NaN where missing."""
    out = np.empty((len(past), horizon, feature_mean.shape[0]))
    for b, x in enumerate(past):
        if name == "mean":
            out[b] = feature_mean
            continue
        filled = impute_locf(x[None], np.arange(len(x))[None], feature_mean)[0]  # (T, D)
        m = 1 if name == "naive" else season
        for h in range(1, horizon + 1):
            back = len(x) + h - 1 - m * ((h - 1) // m + 1)
            out[b, h - 1] = filled[max(back, 0)]
    return out


FORECASTERS = ("mean", "naive", "seasonal-naive")


# --------------------------------------------------------------------- scores
def gaussian_crps(y: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """Closed-form CRPS of N(mean, std^2) at y (Gneiting and Raftery 2007, eq. 21)."""
    z = (y - mean) / std
    pdf = np.exp(-0.5 * z**2) / math.sqrt(2 * math.pi)
    cdf = 0.5 * (1 + np.vectorize(math.erf)(z / math.sqrt(2))) if z.size else z
    return std * (z * (2 * cdf - 1) + 2 * pdf - 1 / _SQRT_PI)


def gaussian_nll(y: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    return 0.5 * math.log(2 * math.pi) + np.log(std) + 0.5 * ((y - mean) / std) ** 2


def bernoulli_nll(y: np.ndarray, p: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    p = np.clip(p, eps, 1 - eps)
    return -(y * np.log(p) + (1 - y) * np.log(1 - p))


def scores(y: np.ndarray, mean: np.ndarray, std: np.ndarray, binary: bool) -> dict:
    """MSE, NLL, CRPS and 90% interval coverage of predictions at the entries y (N,).
    Binary data: Bernoulli NLL of the predicted probability ``mean``, CRPS = Brier score
    (the CRPS of a binary outcome), no interval."""
    if y.size == 0:
        return {}
    mse = float(np.mean((mean - y) ** 2))
    if binary:
        return {"mse": mse, "nll": float(np.mean(bernoulli_nll(y, mean))), "crps": mse,
                "coverage90": math.nan}
    std = np.maximum(std, 1e-12)
    return {"mse": mse, "nll": float(np.mean(gaussian_nll(y, mean, std))),
            "crps": float(np.mean(gaussian_crps(y, mean, std))),
            "coverage90": float(np.mean(np.abs(y - mean) <= NORMAL_90 * std))}


# ---------------------------------------------------------------- calibration
def calibrated_spread(y: np.ndarray, pred: np.ndarray, feature: np.ndarray, dim: int,
                      feature_mean: np.ndarray, binary: bool) -> np.ndarray:
    """Per-feature spread of a point predictor from training residuals.

    y, pred, feature (N,): truths, predictions and feature index of the scored training
    entries. Gaussian: each feature's RMSE (D,). Binary: one weight w in [0, 1] (as (1,))
    so that p = (1 - w) pred + w mean has the least cross-entropy.
    """
    if binary:
        grid = np.linspace(0.0, 1.0, 101)
        mixed = lambda w: (1 - w) * pred + w * feature_mean[feature]
        losses = [np.mean(bernoulli_nll(y, mixed(w))) for w in grid]
        return np.array([grid[int(np.argmin(losses))]])
    floor = STD_FLOOR * max(float(np.std(y)), 1e-12)
    rmse = np.ones(dim)
    for d in range(dim):
        on = feature == d
        if on.any():
            rmse[d] = max(float(np.sqrt(np.mean((pred[on] - y[on]) ** 2))), floor)
    return rmse


def predictive(pred: np.ndarray, feature: np.ndarray, spread: np.ndarray,
               feature_mean: np.ndarray, binary: bool) -> tuple[np.ndarray, np.ndarray]:
    """(mean, std) of a calibrated baseline at entries with feature index ``feature``."""
    if binary:
        w = spread[0]
        return (1 - w) * pred + w * feature_mean[feature], np.zeros_like(pred)
    return pred, spread[feature]
