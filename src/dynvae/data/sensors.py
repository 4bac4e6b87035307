"""Real multichannel series shipped inside pip packages (no download needed).

* ``basic-motions``: the UEA BasicMotions set, 80 recordings of a smartwatch's
  3-axis accelerometer and 3-axis gyroscope (6 channels, 100 steps at 10 Hz) while
  standing, walking, running or playing badminton (aeon, or sktime).
* ``japanese-vowels``: the UEA JapaneseVowels set, 640 utterances of /ae/ by nine
  speakers as 12 LPC cepstrum coefficients per frame, 7 to 29 frames (aeon, or sktime).
* ``seattle-temps``: hourly temperature at Seattle in 2010 (vega_datasets), 8759
  hours cut into week-long sequences (a long univariate series).

The UEA train and test files are pooled (``dynvae train`` splits by sequence).
"""

from __future__ import annotations

import numpy as np

from dynvae.data.dataset import Sequence, SequenceDataset
from dynvae.errors import ConfigError
from dynvae.utils import import_optional

BASIC_MOTIONS_HZ = 10.0
BASIC_MOTIONS_CHANNELS = ["acc_x", "acc_y", "acc_z", "gyro_x", "gyro_y", "gyro_z"]
HOURS_PER_WEEK = 168


def _uea(name: str, purpose: str) -> list[tuple[np.ndarray, str]]:
    """Pooled train + test cases of a UEA set: (D, T_i) float arrays and class labels.

    aeon's loaders are used when aeon is installed, sktime's otherwise.
    """
    try:
        module = import_optional("aeon.datasets", "datasets", purpose)
        load = getattr(module, f"load_{name}")
        parts = [load(split=split) for split in ("train", "test")]
    except ImportError:
        module = import_optional("sktime.datasets", "datasets", purpose)
        load = getattr(module, f"load_{name}")
        parts = [load(split=split, return_X_y=True, return_type="numpy3D"
                      if name == "basic_motions" else "nested_univ") for split in
                 ("train", "test")]
        parts = [(_from_nested(X) if not isinstance(X, np.ndarray) else X, y) for X, y in parts]
    cases = []
    for X, y in parts:
        cases += [(np.asarray(x, dtype=np.float64), str(label)) for x, label in zip(X, y,
                                                                                   strict=True)]
    return cases


def _from_nested(frame) -> list[np.ndarray]:
    """sktime's nested frame (one pandas Series per cell) -> list of (D, T_i) arrays."""
    return [np.stack([np.asarray(cell, dtype=np.float64) for cell in row])
            for row in frame.itertuples(index=False)]


def load_basic_motions() -> SequenceDataset:
    """80 sequences x 100 steps x 6 channels, t in seconds (10 Hz); ids name the activity."""
    cases = _uea("basic_motions", "the 'basic-motions' dataset")
    sequences = [Sequence(t=np.arange(x.shape[1]) / BASIC_MOTIONS_HZ, x=x.T,
                          id=f"case{i}-{label}") for i, (x, label) in enumerate(cases)]
    return SequenceDataset(sequences, BASIC_MOTIONS_CHANNELS, time_unit="seconds")


def load_japanese_vowels() -> SequenceDataset:
    """640 sequences of 7-29 frames x 12 LPC cepstrum coefficients, t = frame index;
    ids name the speaker (1-9)."""
    cases = _uea("japanese_vowels", "the 'japanese-vowels' dataset")
    sequences = [Sequence(t=np.arange(x.shape[1], dtype=np.float64), x=x.T,
                          id=f"case{i}-speaker{label}") for i, (x, label) in enumerate(cases)]
    return SequenceDataset(sequences, [f"lpc{k}" for k in range(cases[0][0].shape[0])],
                           time_unit="frames")


def load_seattle_temps(hours: int = HOURS_PER_WEEK) -> SequenceDataset:
    """Hourly Seattle temperatures of 2010 (degrees Fahrenheit) cut into consecutive
    sequences of ``hours`` steps (a last, shorter piece is dropped); t in hours since
    the start of each sequence."""
    if hours < 2:
        raise ConfigError(f"hours must be >= 2, got {hours}")
    local = import_optional("vega_datasets", "datasets", "the 'seattle-temps' dataset")
    frame = local.local_data.seattle_temps()
    temps = frame["temp"].to_numpy(np.float64)
    n = len(temps) // hours
    if n < 1:
        raise ConfigError(f"hours={hours} is longer than the {len(temps)}-hour series")
    starts = frame["date"].iloc[::hours][:n]
    t = np.arange(hours, dtype=np.float64)
    sequences = [Sequence(t=t, x=temps[k * hours:(k + 1) * hours, None],
                          id=f"from-{start:%Y-%m-%dT%H}") for k, start in enumerate(starts)]
    return SequenceDataset(sequences, ["temp"], time_unit="hours")
