"""Initial GP hyperparameters from the data: time scales, seasonal periods and noise level.

The marginal likelihood of a GP is multimodal in its time scales, periods above all (a
period that is off by more than period^2 / span drifts a whole cycle over the data), so
where L-BFGS starts decides what it finds. :func:`data_scales` reads the starting point off
the data instead of constants that fit one dataset:

- ``span`` and ``spacing`` (median step) bound every time scale;
- ``periods``: the strongest peaks of the periodogram of the linearly detrended series
  (resampled on a regular grid of the median step, so irregular times are allowed), each
  standing out of its local background, between 3 steps and a third of the span (three
  cycles at least), skipping the harmonics P/2 .. P/max(J, 6) of a period P found (a
  periodic part of order J represents the first J; higher ones call for a higher order,
  not for another period) and peaks within 10% of those (side lobes, sidebands);
  each peak is refined by a parabola through log-power;
- ``seasonal_fraction``: variance of each period's part of a harmonic regression, as a
  fraction of the series' variance;
- ``noise_variance``: var of second differences of the de-seasonalised residual / 6 (for
  white noise e, var(e_{t+1} - 2 e_t + e_{t-1}) = 6 var(e); a smooth signal adds little);
- ``lengthscale``: the lag at which the autocorrelation of the de-seasonalised signal first
  falls below 1/e (for Matern-1/2 this is exactly its length-scale).

Values are in the units of the times given and as fractions of the variance of the
values, which the command line standardises to 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from dynvae.errors import DataError

_MAX_GRID = 1 << 20            # regular-grid points used for the spectrum and autocorrelation
_CANDIDATE_PEAKS = 64           # strongest local maxima examined
_HARMONICS = 6                  # P/2 .. P/6 of a period P found are not periods of their own
_PEAK_OVER_BACKGROUND = 30.0   # a periodogram ordinate is Exp-distributed: P(> 30 x median) ~ 1e-9


@dataclass(frozen=True)
class DataScales:
    """Scales of one series (see the module docstring); times in the data's unit."""

    span: float
    spacing: float
    periods: tuple[float, ...]
    seasonal_fraction: tuple[float, ...]
    noise_variance: float
    lengthscale: float


def data_scales(t: np.ndarray, y: np.ndarray, max_periods: int = 3,
                harmonics: int = 3) -> DataScales:
    """Scales of the series y (T,) or (T, D) (NaN = missing) at increasing times t (T,).

    Outputs are standardised and pooled (spectra and autocorrelations summed over outputs).
    ``harmonics``: harmonics a periodic part represents (its order), skipped as periods and
    regressed on. Raises DataError with fewer than 3 observed times.
    """
    t = np.asarray(t, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64).reshape(len(t), -1)
    keep = np.isfinite(y).any(1)
    if keep.sum() < 3:
        raise DataError(f"need at least 3 observed times to read scales off the data, got "
                        f"{int(keep.sum())}")
    t, y = t[keep], y[keep]
    span = float(t[-1] - t[0])
    spacing = float(np.median(np.diff(t)))
    grid = np.arange(0.0, span + 0.5 * spacing, max(spacing, span / _MAX_GRID)) + t[0]
    detrended = [_detrend(t, y[:, d]) for d in range(y.shape[1])]
    regular = np.stack([np.interp(grid, *d) for d in detrended])            # (D, G)
    periods = find_periods(grid, regular, max_periods, harmonics)
    fractions, residuals, noises = [], [], []
    for td, rd in detrended:                    # rd in units of the output's std
        fitted, parts = _harmonic_regression(td, rd, periods, harmonics)
        fractions.append([float(np.var(p)) for p in parts])
        residuals.append(np.interp(grid, td, rd - fitted))
        second = np.diff(rd - fitted, 2)
        noises.append(float(np.var(second)) / 6 if len(second) else 0.5)
    noise = min(max(float(np.mean(noises)), 1e-6), 0.5)
    lengthscale = min(max(_decorrelation_time(grid, residuals, sum(noises)), spacing), span)
    seasonal = tuple(float(np.mean(f)) for f in zip(*fractions, strict=True))
    return DataScales(span, spacing, tuple(periods), seasonal, noise, lengthscale)


def _detrend(t: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Observed (t, y - least-squares line), y standardised to unit variance."""
    ok = np.isfinite(y)
    t, y = t[ok], y[ok]
    if len(t) < 2:
        return np.array([t[0], t[0] + 1.0]), np.zeros(2)
    basis = np.stack([np.ones_like(t), t - t.mean()], 1)
    resid = y - basis @ np.linalg.lstsq(basis, y, rcond=None)[0]
    scale = np.std(y)
    return t, resid / (scale if scale > 0 else 1.0)


def find_periods(grid: np.ndarray, values: np.ndarray, max_periods: int = 3,
                 harmonics: int = 3, force: bool = False) -> list[float]:
    """Periods of the strongest periodogram peaks of values (D, G) on a regular grid (G,).

    A peak counts when it exceeds ``_PEAK_OVER_BACKGROUND`` times the median periodogram
    over the surrounding half decade of frequency, unless ``force`` (then the strongest
    peaks are returned whatever their height). Strongest first.
    """
    step = float(grid[1] - grid[0]) if len(grid) > 1 else 1.0
    n = values.shape[-1]
    if n < 8:
        return []
    n_fft = 1 << int(math.ceil(math.log2(4 * n)))                 # zero-padded 4x: finer peaks
    power = (np.abs(np.fft.rfft(values - values.mean(-1, keepdims=True), n_fft)) ** 2).sum(0)
    freq = np.fft.rfftfreq(n_fft, step)
    span = step * (n - 1)
    band = (freq >= 3.0 / span) & (freq <= 1.0 / (3.0 * step))
    peaks = np.flatnonzero(band[1:-1] & (power[1:-1] > power[:-2]) & (power[1:-1] >= power[2:])) + 1
    if len(peaks) == 0:
        return []
    in_band = np.flatnonzero(band)
    log_band = np.log10(freq[in_band])
    chosen: list[float] = []
    for k in peaks[np.argsort(-power[peaks])][:_CANDIDATE_PEAKS]:
        if len(chosen) >= max_periods:
            break
        near = np.abs(log_band - math.log10(freq[k])) <= 0.25
        if power[k] < _PEAK_OVER_BACKGROUND * np.median(power[in_band[near]]) and not force:
            continue
        period = 1.0 / _refine_frequency(freq, power, k)
        if not any(_is_harmonic(period, p, max(harmonics, _HARMONICS), span) for p in chosen):
            chosen.append(period)
    return chosen


def _refine_frequency(freq: np.ndarray, power: np.ndarray, k: int) -> float:
    """Vertex of the parabola through log-power at bins k-1, k, k+1."""
    a, b, c = np.log(np.maximum(power[k - 1:k + 2], 1e-300))
    denom = a - 2 * b + c
    shift = 0.5 * (a - c) / denom if denom < 0 else 0.0
    return float(freq[k] + np.clip(shift, -0.5, 0.5) * (freq[1] - freq[0]))


def _is_harmonic(period: float, base: float, harmonics: int, span: float) -> bool:
    """1/period within a tenth of 1/base (or twice the frequency resolution 1/span) of
    n/base for n = 1..harmonics: a harmonic of the period ``base``, or a side lobe or
    modulation sideband of one."""
    return any(abs(1.0 / period - n / base) <= max(2.0 / span, 0.1 / base)
               for n in range(1, harmonics + 1))


def _harmonic_regression(t: np.ndarray, y: np.ndarray, periods: list[float],
                         harmonics: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """Least-squares fit of sum_P sum_j a cos(2 pi j t / P) + b sin(...) to y (T,): the
    fitted values (T,) and each period's part (T,) in the order of ``periods``."""
    if not periods:
        return np.zeros_like(y), []
    cols = [f(2 * math.pi * j * (t - t[0]) / p) for p in periods
            for j in range(1, harmonics + 1) for f in (np.cos, np.sin)]
    basis = np.stack(cols, 1)                                            # (T, 2 J n_periods)
    coef = np.linalg.lstsq(basis, y, rcond=None)[0]
    per = 2 * harmonics
    parts = [basis[:, i * per:(i + 1) * per] @ coef[i * per:(i + 1) * per]
             for i in range(len(periods))]
    return basis @ coef, parts


def _decorrelation_time(grid: np.ndarray, residuals: list[np.ndarray], noise: float) -> float:
    """First lag at which the pooled autocovariance of the residuals (G,) each drops below
    1/e of the signal's variance (lag-0 autocovariance less the pooled ``noise`` variance);
    the span when it never does."""
    step = float(grid[1] - grid[0]) if len(grid) > 1 else 1.0
    n = len(grid)
    n_fft = 1 << int(math.ceil(math.log2(2 * n)))
    acov = sum(np.fft.irfft(np.abs(np.fft.rfft(r - r.mean(), n_fft)) ** 2, n_fft)[:n]
               for r in residuals)
    acov = acov / (n - np.arange(n))                                     # unbiased per lag
    signal = max(acov[0] - noise, 1e-3 * acov[0])
    below = np.flatnonzero(acov[1:] < signal / math.e)
    return step * (below[0] + 1) if len(below) else step * (n - 1)
