"""Scales read off the data (dynvae.gp.initialization): periods from the periodogram on
irregular times with gaps, harmonics and sidebands skipped, noise from second differences,
decorrelation time of an Ornstein-Uhlenbeck path; and the real CO2 series."""

import math

import numpy as np
import pytest

from dynvae.errors import DataError
from dynvae.gp.initialization import data_scales


def irregular_times(n, span, seed, gap=None):
    rng = np.random.default_rng(seed)
    t = np.sort(rng.uniform(0, span, n))
    if gap is not None:
        t = t[(t < gap[0]) | (t > gap[1])]
    return t, rng


def test_two_periods_found_on_irregular_half_hourly_times_with_a_gap():
    # 8 weeks of half-hourly readings, 30% dropped at random and a 3-day gap
    t, rng = irregular_times(int(56 * 48 * 0.7), 56.0, 0, gap=(20.0, 23.0))
    y = (np.sin(2 * math.pi * t) + 0.5 * np.cos(2 * math.pi * 2 * t)       # daily, 2 harmonics
         + 0.6 * np.sin(2 * math.pi * t / 7) + 0.2 * rng.standard_normal(len(t)))
    scales = data_scales(t, y)
    assert len(scales.periods) == 2
    assert scales.periods[0] == pytest.approx(1.0, rel=2e-3)           # strongest first
    assert scales.periods[1] == pytest.approx(7.0, rel=0.03)
    # the 12-hour harmonic is represented by the daily part, not reported as a period
    assert not any(abs(p - 0.5) < 0.05 for p in scales.periods)
    # variance shares of the two parts: (1 + 0.25) / 2 and 0.36 / 2 over the total
    total = np.var(y)
    assert scales.seasonal_fraction[0] == pytest.approx(0.625 / total, rel=0.05)
    assert scales.seasonal_fraction[1] == pytest.approx(0.18 / total, rel=0.1)
    assert scales.noise_variance == pytest.approx(0.04 / total, rel=0.2)
    assert scales.spacing == pytest.approx(np.median(np.diff(t)))
    assert scales.span == pytest.approx(t[-1] - t[0])


def test_no_period_in_an_ornstein_uhlenbeck_path_and_its_decorrelation_time():
    # exact OU sample (Matern-1/2, length-scale 2) on an irregular grid, small noise
    t, rng = irregular_times(3000, 300.0, 1)
    ell, y = 2.0, np.empty(3000)
    y[0] = rng.standard_normal()
    for k in range(1, 3000):
        rho = math.exp(-(t[k] - t[k - 1]) / ell)
        y[k] = rho * y[k - 1] + math.sqrt(1 - rho ** 2) * rng.standard_normal()
    scales = data_scales(t, y + 0.05 * rng.standard_normal(3000))
    assert scales.periods == ()
    assert scales.lengthscale == pytest.approx(ell, rel=0.25)     # the 1/e lag of exp(-tau/ell)


def test_white_noise_is_mostly_noise_and_has_no_period():
    t, rng = irregular_times(2000, 100.0, 2)
    scales = data_scales(t, rng.standard_normal(2000))
    assert scales.periods == ()
    assert scales.noise_variance > 0.4


def test_missing_values_and_several_outputs():
    t = np.arange(600) / 24.0
    y = np.stack([np.sin(2 * math.pi * t), np.cos(2 * math.pi * t)], 1)
    y[::7, 0] = np.nan
    scales = data_scales(t, y)
    assert scales.periods[0] == pytest.approx(1.0, rel=5e-3)
    with pytest.raises(DataError, match="at least 3"):
        data_scales(t[:5], np.full(5, np.nan))


def test_co2_yearly_period():
    pytest.importorskip("statsmodels")
    from dynvae.data import load_dataset
    seq = load_dataset("co2").sequences[0]
    scales = data_scales(seq.t, seq.x)
    assert scales.periods[0] == pytest.approx(1.0, rel=2e-3)         # decimal years
    assert len(scales.periods) == 1                                   # the half-year: harmonic
    assert 1e-5 < scales.noise_variance < 1e-3                        # 0.35 ppm of 16.5 ppm
