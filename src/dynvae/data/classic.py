"""Classic univariate series shipped inside statsmodels (no download needed)."""

from __future__ import annotations

import numpy as np

from dynvae.data.dataset import Sequence, SequenceDataset
from dynvae.utils import import_optional


def load_nile() -> SequenceDataset:
    """Annual flow of the Nile at Aswan, 1871-1970: one sequence of 100 steps,
    t = calendar year, feature ``volume`` (10^8 m^3)."""
    nile = import_optional("statsmodels.datasets.nile", "datasets", "the 'nile' dataset")
    frame = nile.load_pandas().data
    seq = Sequence(t=frame["year"].to_numpy(np.float64),
                   x=frame[["volume"]].to_numpy(np.float64), id="nile")
    return SequenceDataset([seq], ["volume"], time_unit="years")


def load_co2() -> SequenceDataset:
    """Weekly atmospheric CO2 at Mauna Loa, March 1958 - December 2001: one sequence
    of 2284 steps with 59 missing values, t in decimal years, feature ``co2`` (ppm)."""
    co2 = import_optional("statsmodels.datasets.co2", "datasets", "the 'co2' dataset")
    frame = co2.load_pandas().data
    stamps = frame.index
    days_in_year = np.where(stamps.is_leap_year, 366.0, 365.0)
    t = stamps.year + (stamps.day_of_year - 1) / days_in_year                  # decimal years
    seq = Sequence(t=np.asarray(t, dtype=np.float64),
                   x=frame[["co2"]].to_numpy(np.float64), id="co2")
    return SequenceDataset([seq], ["co2"], time_unit="years")
