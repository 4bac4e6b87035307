"""The simplest predictions a user would try first, to set a model's metrics beside:
imputation by each feature's mean, the last observation carried forward (``locf``) or
linear interpolation in time, and forecasts by the mean, the last value (``naive``,
persistence) or the value one season back (``seasonal-naive``).

NumPy arrays on the data's original scale: ``x`` (B, T, D) with NaN where missing, ``t``
(B, T), ``valid`` (B, T) for padding. The season ``m`` of the seasonal-naive forecast
is the first peak of the autocorrelation of the given sequences' residuals from their
least-squares lines (m = 1, the naive forecast, without one): without removing the
line, a trend (co2's) makes every lag correlate and the first small bump (29 weeks)
passes for the season; with it, co2's is 52 weeks.
"""

from __future__ import annotations

import numpy as np


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
    """The first local maximum (lag >= 2) of the mean autocorrelation of the given
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
