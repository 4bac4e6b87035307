"""The built-in datasets read from pip packages' own files: basic-motions,
japanese-vowels (aeon or sktime) and seattle-temps (vega_datasets)."""

import numpy as np
import pytest

from dynvae.data import load_dataset
from dynvae.errors import ConfigError


def test_basic_motions_pools_the_uea_train_and_test_cases():
    aeon = pytest.importorskip("aeon.datasets")
    ds = load_dataset("basic-motions")
    assert len(ds) == 80 and ds.dim == 6 and set(ds.lengths.tolist()) == {100}
    X, y = aeon.load_basic_motions(split="train")
    np.testing.assert_array_equal(ds[0].x, X[0].T)
    np.testing.assert_allclose(np.diff(ds[0].t), 0.1)
    assert ds[0].id.endswith(str(y[0])) and ds.time_unit == "seconds"


def test_japanese_vowels_have_variable_lengths():
    pytest.importorskip("aeon.datasets")
    ds = load_dataset("japanese-vowels")
    assert len(ds) == 640 and ds.dim == 12
    assert ds.lengths.min() == 7 and ds.lengths.max() == 29
    assert not np.isnan(ds[0].x).any()


def test_seattle_temps_are_week_long_hourly_pieces():
    vega = pytest.importorskip("vega_datasets")
    ds = load_dataset("seattle-temps")
    temps = vega.local_data.seattle_temps()["temp"].to_numpy()
    assert len(ds) == len(temps) // 168 and ds.dim == 1
    np.testing.assert_array_equal(ds[1].x[:, 0], temps[168:336])
    assert ds[1].id == "from-2010-01-08T00"
    assert len(load_dataset("seattle-temps", hours=24)) == len(temps) // 24
    with pytest.raises(ConfigError, match="hours"):
        load_dataset("seattle-temps", hours=1)
