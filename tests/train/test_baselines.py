"""dynvae.train.baselines, vectorised over sequences and features, against the
per-series references they must equal: np.interp, a carried-forward loop and np.polyfit,
on random data with random gaps (whole features unobserved included) and irregular
times."""

import numpy as np
import pytest

from dynvae.train import baselines


def _series(seed: int):
    rng = np.random.default_rng(seed)
    B, T, D = rng.integers(1, 6), rng.integers(1, 40), rng.integers(1, 5)
    x = rng.normal(size=(B, T, D)) + rng.normal() * np.arange(T)[None, :, None]
    x[rng.uniform(size=x.shape) < rng.uniform(0.0, 0.95)] = np.nan
    t = np.sort(rng.uniform(0, 100, size=(B, T)), axis=1)
    return x, t, rng.normal(size=D)


def _per_series(x, fill):
    out = np.empty_like(x)
    for b, d in np.ndindex(x.shape[0], x.shape[2]):
        out[b, :, d] = fill(b, d, ~np.isnan(x[b, :, d]))
    return out


@pytest.mark.parametrize("seed", range(40))
def test_imputers_equal_the_per_series_references(seed):
    x, t, mean = _series(seed)
    steps = np.arange(x.shape[1])

    def linear(b, d, seen):
        return np.interp(t[b], t[b, seen], x[b, seen, d]) if seen.any() else mean[d]

    def locf(b, d, seen):
        if not seen.any():
            return mean[d]
        last = np.maximum.accumulate(np.where(seen, steps, -1))
        return x[b, np.where(last < 0, np.argmax(seen), last), d]
    np.testing.assert_allclose(baselines.impute_linear(x, t, mean), _per_series(x, linear),
                               rtol=0, atol=1e-10)
    np.testing.assert_array_equal(baselines.impute_locf(x, t, mean), _per_series(x, locf))


@pytest.mark.parametrize("seed", range(40))
def test_detrending_equals_polyfit_per_series(seed):
    x, _, _ = _series(seed)
    k = np.arange(x.shape[1], dtype=float)

    def residual(b, d, seen):
        if seen.sum() < 3:
            return x[b, :, d]
        return x[b, :, d] - np.polyval(np.polyfit(k[seen], x[b, seen, d], 1), k)
    np.testing.assert_allclose(baselines.detrended(x), _per_series(x, residual),
                               rtol=0, atol=1e-8)


def test_seasonal_forecasts_repeat_the_last_season():
    past = [np.arange(10.0)[:, None], np.arange(7.0)[:, None]]
    got = baselines.forecast_baseline("seasonal-naive", past, 5, np.zeros(1), 3)
    np.testing.assert_array_equal(got[..., 0], [[7, 8, 9, 7, 8], [4, 5, 6, 4, 5]])
    naive = baselines.forecast_baseline("naive", past, 2, np.zeros(1), 3)
    np.testing.assert_array_equal(naive[..., 0], [[9, 9], [6, 6]])
