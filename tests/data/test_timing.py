"""Irregularity of time stamps: regular grids, gaps, jittered and random times."""

import numpy as np
import pytest
import torch

from dynvae.data import SequenceDataset
from dynvae.data.dataset import Sequence
from dynvae.data.timing import grid_step, irregularity_of_times, time_irregularity


def test_regular_grids_are_regular_whatever_their_step():
    m = irregularity_of_times([np.arange(50) * 0.1, 3.0 + np.arange(20) * 7.0])
    assert not m.irregular
    assert m.absent_share == 0 and m.off_grid_share == 0 and m.largest_gap == pytest.approx(1)


def test_round_off_jitter_is_regular():
    t = np.arange(200) * 0.01 + np.random.default_rng(0).normal(0, 1e-6, 200)
    assert not irregularity_of_times([np.sort(t)]).irregular


def test_trading_days_miss_two_grid_points_a_week():
    days = np.arange(7 * 40)
    weekdays = days[days % 7 < 5].astype(float)
    m = irregularity_of_times([weekdays])
    assert m.irregular and m.median_step == 1.0
    assert m.absent_share == pytest.approx(2 / 7, abs=0.01)
    assert m.largest_gap == 3 and m.off_grid_share == 0


def test_multi_hour_gaps_in_five_minute_readings():
    t = np.arange(0, 48, 5 / 60)
    keep = np.ones(t.size, bool)
    keep[100:160] = False                                   # a five-hour gap
    m = irregularity_of_times([t[keep]])
    assert m.irregular
    assert m.largest_gap == pytest.approx(61)
    assert m.absent_share == pytest.approx(60 / (t.size - 1), rel=1e-6)


def test_random_times_are_off_the_grid():
    t = np.cumsum(np.random.default_rng(1).exponential(1.0, 300))
    m = irregularity_of_times([t])
    assert m.irregular and m.off_grid_share > 0.3


def test_dataset_and_batch_give_the_same_measure():
    seqs = [Sequence(np.array([0.0, 1.0, 2.0, 5.0]), np.ones((4, 1)), id="a"),
            Sequence(np.array([0.0, 2.0, 4.0]), np.ones((3, 1)), id="b")]
    data = SequenceDataset(seqs, ["x"])
    a, b = time_irregularity(data), time_irregularity(data.to_batch(dtype=torch.float64))
    assert a == b and a.n_steps == 5 and a.absent_share == pytest.approx(2 / 7)
    assert irregularity_of_times([np.array([1.0])]).n_steps == 0


def test_readings_dropped_from_a_grid_keep_the_grids_step():
    """Hourly readings with 60% of the hours dropped: a median gap of 2 h, but every
    gap a whole number of hours, so the grid is hourly, its absent hours counted as
    gaps (not steps off a 2-hour grid); random and regular times keep their median."""
    rng = np.random.default_rng(0)
    hours = np.sort(rng.choice(2000, 800, replace=False)).astype(float)
    assert np.median(np.diff(hours)) >= 2.0
    assert grid_step(np.diff(hours)) == 1.0
    m = irregularity_of_times([hours])
    assert m.median_step == 1.0 and m.off_grid_share == 0.0
    assert m.absent_share == pytest.approx(1 - 799 / (hours[-1] - hours[0]))   # steps/grid
    random = np.diff(np.cumsum(rng.exponential(1.0, 300)))
    assert grid_step(random) == np.median(random)
    assert grid_step(np.full(10, 0.25)) == 0.25
    jittered = 1.0 + rng.uniform(-0.02, 0.02, 50)
    assert grid_step(jittered) == np.median(jittered)
