"""Built-in datasets registry and the statsmodels-backed series."""

import sys

import numpy as np
import pytest

from dynvae.data import DATASETS, DatasetInfo, list_datasets, load_dataset
from dynvae.errors import ConfigError, MissingDependencyError


def test_registry_lists_the_built_ins():
    assert {"nile", "co2", "synthetic-lgssm"} <= set(list_datasets())
    assert list_datasets() == sorted(DATASETS)
    assert all(isinstance(info, DatasetInfo) and info.name == name
               for name, info in DATASETS.items())


def test_nile_matches_statsmodels():
    from statsmodels.datasets import nile
    frame = nile.load_pandas().data
    ds = load_dataset("nile")
    assert len(ds) == 1 and len(ds[0]) == 100 and ds.feature_names == ["volume"]
    np.testing.assert_array_equal(ds[0].x[:, 0], frame["volume"].to_numpy())
    np.testing.assert_array_equal(ds[0].t, np.arange(1871.0, 1971.0))
    assert ds.to_batch().mask.all()


def test_co2_has_2284_weekly_steps_with_59_missing():
    from statsmodels.datasets import co2
    frame = co2.load_pandas().data
    ds = load_dataset("co2")
    batch = ds.to_batch()
    assert batch.n_steps == 2284 and int((~batch.mask).sum()) == 59
    np.testing.assert_array_equal(ds[0].x[:, 0], frame["co2"].to_numpy())
    assert ds[0].t[0] == 1958 + 87 / 365                   # 1958-03-29 is day 88
    np.testing.assert_allclose(np.diff(ds[0].t), 7 / 365.25, atol=0.001)


def test_synthetic_lgssm_takes_options():
    ds = load_dataset("synthetic-lgssm", n=3, T=7, D=2, seed=1)
    assert len(ds) == 3 and ds.dim == 2 and ds.lengths.tolist() == [7, 7, 7]


def test_load_dataset_errors():
    with pytest.raises(ConfigError, match=r"unknown dataset 'nil'; choose one of \[.*'nile'"):
        load_dataset("nil")
    with pytest.raises(ConfigError, match=r"dataset 'nile' does not accept options \['n'\]"):
        load_dataset("nile", n=3)
    with pytest.raises(ConfigError, match=r"options are \['n', 'T', 'S', 'D', 'missing', 'seed'\]"):
        load_dataset("synthetic-lgssm", steps=3)


def test_missing_extra_is_named(monkeypatch):
    monkeypatch.setitem(sys.modules, "statsmodels.datasets.nile", None)   # import fails
    with pytest.raises(MissingDependencyError, match=r"pip install 'dynvae\[datasets\]'"):
        load_dataset("nile")
