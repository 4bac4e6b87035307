"""Baselines and scores of the model-quality benchmark (``quality.py``).

Everything here works on NumPy arrays on the data's original scale: ``x`` (B, T, D)
with NaN where missing, ``t`` (B, T), ``valid`` (B, T) for padding. Baselines
(``dynvae.train.baselines``):

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

# Imputers and forecasters (mean, locf, linear; mean, naive, seasonal-naive) live in
# dynvae.train.baselines, where `dynvae train` and `evaluate` use them too.
from dynvae.train.baselines import (  # noqa: F401
    FORECASTERS,
    IMPUTERS,
    detrended,
    forecast_baseline,
    impute_linear,
    impute_locf,
    impute_mean,
    season_length,
)

NORMAL_90 = 1.6448536269514722   # the 95% quantile of N(0, 1): a central 90% interval
# a baseline's std is at least this share of the data's std: a feature that is constant
# in the training data (e.g. an image's corner pixel) would otherwise get a zero spread
STD_FLOOR = 1e-3
_SQRT_PI = math.sqrt(math.pi)




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
