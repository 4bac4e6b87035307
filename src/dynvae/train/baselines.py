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

import warnings

import numpy as np

# ----------------------------------------------------------------- imputation
# Every imputer below runs over all sequences and features at once (no loop in Python
# over them): a table of thousands of 784-pixel frames takes milliseconds, not the
# seconds to minutes of a per-(sequence, feature) loop.

def impute_mean(x: np.ndarray, feature_mean: np.ndarray) -> np.ndarray:
    return np.broadcast_to(feature_mean, x.shape).copy()


def _neighbours(seen: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For seen (B, T, D): the step of the last observed entry at or before each step
    and of the first at or after it, (B, T, D) each, -1 / T where there is none."""
    T = seen.shape[1]
    steps = np.arange(T)[None, :, None]
    before = np.maximum.accumulate(np.where(seen, steps, -1), axis=1)
    after = np.minimum.accumulate(np.where(seen, steps, T)[:, ::-1], axis=1)[:, ::-1]
    return before, after


def _at(x: np.ndarray, steps: np.ndarray) -> np.ndarray:
    """x (B, T, D) at the steps (B, T, D) of each entry's own sequence and feature."""
    return np.take_along_axis(x, np.clip(steps, 0, x.shape[1] - 1), axis=1)


def impute_locf(x: np.ndarray, t: np.ndarray, feature_mean: np.ndarray) -> np.ndarray:
    """Carry each feature's last observed value forward; before the first observation,
    carry that one backward; a feature never observed in a sequence gets its mean."""
    seen = ~np.isnan(x)
    before, after = _neighbours(seen)
    out = _at(x, np.where(before >= 0, before, after))
    return np.where(seen.any(1, keepdims=True), out, feature_mean)


def impute_linear(x: np.ndarray, t: np.ndarray, feature_mean: np.ndarray) -> np.ndarray:
    """Linear interpolation in time between each entry's observed neighbours (the
    nearest observed value before the first and after the last observation, as
    np.interp); a feature never observed in a sequence gets its mean."""
    seen = ~np.isnan(x)
    before, after = _neighbours(seen)
    inside = (before >= 0) & (after < x.shape[1]) & (before != after)
    tt = np.broadcast_to(np.asarray(t, dtype=float)[..., None], x.shape)
    with np.errstate(invalid="ignore", divide="ignore"):
        t0, t1 = _at(tt, before), _at(tt, after)
        x0, x1 = _at(x, before), _at(x, after)
        between = x0 + (tt - t0) / (t1 - t0) * (x1 - x0)
    out = np.where(inside, between, np.where(before >= 0, x0, x1))
    return np.where(seen.any(1, keepdims=True), out, feature_mean)


IMPUTERS = {
    "mean": lambda x, t, m: impute_mean(x, m),
    "locf": impute_locf,
    "linear": impute_linear,
}


# ------------------------------------------------------------------ forecasts
def detrended(x: np.ndarray) -> np.ndarray:
    """x (B, T, D) minus each sequence's and feature's least-squares line in the step
    index over its observed values (NaN kept; fewer than 3 values: unchanged)."""
    seen = ~np.isnan(x)
    k = np.broadcast_to(np.arange(x.shape[1], dtype=float)[None, :, None], x.shape)
    n = seen.sum(1)                                                         # (B, D)
    kk, xx = np.where(seen, k, 0.0), np.where(seen, x, 0.0)
    sk, sx = kk.sum(1), xx.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        slope = (n * (kk * xx).sum(1) - sk * sx) / (n * (kk * kk).sum(1) - sk * sk)
        intercept = (sx - slope * sk) / n
    line = slope[:, None] * k + intercept[:, None]
    return np.where((n >= 3)[:, None], x - line, x)


def season_length(x: np.ndarray, valid: np.ndarray, max_lag: int = 200) -> int:
    """The first local maximum (lag >= 2) of the mean autocorrelation of the given
    sequences' residuals from their lines (:func:`detrended`) that exceeds 0.2, or 1
    when there is none. x (B, T, D) NaN where missing."""
    lags = min(max_lag, int(valid.sum(1).min()) // 2)
    if lags < 3:
        return 1
    x = detrended(x)
    with warnings.catch_warnings():       # a feature never observed: NaN, and no warning
        warnings.simplefilter("ignore", RuntimeWarning)
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
    m = 1 if name == "naive" else season
    h = np.arange(1, horizon + 1)
    for b, x in enumerate(past):
        if name == "mean":
            out[b] = feature_mean
            continue
        filled = impute_locf(x[None], np.arange(len(x))[None], feature_mean)[0]  # (T, D)
        back = len(x) + h - 1 - m * ((h - 1) // m + 1)          # the step a season back
        out[b] = filled[np.maximum(back, 0)]
    return out


FORECASTERS = ("mean", "naive", "seasonal-naive")
