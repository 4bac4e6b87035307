"""Times named on the command line: ``--at`` lists and ``--grid`` steps, and the rows
they add to a dataset (every entry missing) so that a model predicts there.

Times are numbers in the data's time unit, or dates when the data's times were parsed
from dates (then a step may also be a duration such as ``5min``, ``1h`` or ``2D``).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd

from dynvae.data import SequenceDataset
from dynvae.data.dataset import _NANOSECONDS
from dynvae.data.timing import time_irregularity
from dynvae.errors import ConfigError, DataError


def _to_units(stamps: pd.DatetimeIndex | pd.Timestamp, data: SequenceDataset):
    origin = pd.Timestamp(data.time_origin)
    if origin.tz is not None:
        origin = origin.tz_convert("UTC").tz_localize(None)
        stamps = stamps.tz_convert("UTC").tz_localize(None) if stamps.tz is not None \
            else stamps
    unit = _NANOSECONDS[data.time_unit]
    return np.asarray((stamps - origin) / pd.Timedelta(1, "ns"), dtype=np.float64) / unit


def parse_times(text: str, data: SequenceDataset) -> np.ndarray:
    """(H,) strictly increasing times from "a,b,c": numbers, or dates for dated data."""
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not parts:
        raise ConfigError("--at needs at least one time, e.g. --at 10.5,12")
    try:
        times = np.array([float(p) for p in parts])
    except ValueError:
        if data.time_origin is None:
            raise ConfigError(f"--at {text!r}: the data's times are numbers, give numbers"
                              ) from None
        try:
            times = _to_units(pd.DatetimeIndex(pd.to_datetime(parts)), data)
        except (ValueError, TypeError) as err:
            raise ConfigError(f"--at {text!r}: not numbers or dates ({err})") from None
    if not np.isfinite(times).all() or (np.diff(times) <= 0).any():
        raise ConfigError(f"--at {text!r}: times must be finite and strictly increasing")
    return times


def parse_step(text: str, data: SequenceDataset) -> float:
    """A positive grid step: "auto" (the median step of the data), a number in the
    data's time unit, or a duration ("5min", "1h") for dated data."""
    if text == "auto":
        return time_irregularity(data).median_step
    try:
        step = float(text)
    except ValueError:
        if data.time_origin is None:
            raise ConfigError(f"--grid {text!r}: the data's times are numbers, give a "
                              "number or 'auto'") from None
        try:
            step = pd.Timedelta(text) / pd.Timedelta(1, "ns") / _NANOSECONDS[data.time_unit]
        except ValueError as err:
            raise ConfigError(f"--grid {text!r}: not a number, 'auto' or a duration ({err})"
                              ) from None
    if not np.isfinite(step) or step <= 0:
        raise ConfigError(f"--grid {text!r}: the step must be positive")
    return step


def grid_times(t: np.ndarray, step: float) -> np.ndarray:
    """Points t_0 + k step (k >= 1) before t_last that are farther than step / 2 from
    every row: the grid points inside the gaps of one sequence's times t (T,)."""
    grid = t[0] + step * np.arange(1, int(np.floor((t[-1] - t[0]) / step)) + 1)
    grid = grid[grid < t[-1]]
    if grid.size == 0:
        return grid
    pos = np.clip(np.searchsorted(t, grid), 1, len(t) - 1)
    nearest = np.minimum(np.abs(grid - t[pos - 1]), np.abs(t[pos] - grid))
    return grid[nearest > step / 2]


def with_rows_at(data: SequenceDataset, times: list[np.ndarray]
                 ) -> tuple[SequenceDataset, list[np.ndarray]]:
    """``data`` with a row of missing values at each new time of each sequence (times
    already present are kept as they are). Returns the dataset and, per sequence, a
    (T',) bool array marking the added rows."""
    if data.input_dim > 0 and any(len(ts) for ts in times):
        raise DataError("the data has inputs u, which are unknown at the new times: "
                        "add rows with their inputs to the data instead of --at/--grid")
    sequences, added = [], []
    for seq, new in zip(data.sequences, times, strict=True):
        new = np.setdiff1d(np.asarray(new, dtype=np.float64), seq.t)
        t = np.concatenate([seq.t, new])
        order = np.argsort(t, kind="stable")
        x = np.concatenate([seq.x, np.full((new.size, seq.x.shape[1]), np.nan)])[order]
        sequences.append(replace(seq, t=t[order], x=x))
        added.append((np.arange(t.size) >= seq.t.size)[order])
    return replace(data, sequences=sequences), added
