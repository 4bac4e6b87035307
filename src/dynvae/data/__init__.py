"""Data layer: the SequenceBatch type, file readers, built-in and synthetic datasets.

Names are imported from their submodules on first use (PEP 562), so that
``import dynvae.data.datasets`` (the registry the command line lists) does not load
torch or pandas.
"""

from __future__ import annotations

import importlib

_SOURCES = {
    "dynvae.data.batch": ("SequenceBatch", "validate_batch"),
    "dynvae.data.dataset": ("Sequence", "SequenceDataset", "Standardizer", "collate"),
    "dynvae.data.datasets": ("DATASETS", "DatasetInfo", "list_datasets", "load_dataset"),
    "dynvae.data.io": ("from_dataframe", "from_numpy", "read_csv", "read_numpy",
                       "read_parquet", "read_table"),
    "dynvae.data.export": ("write_table",),
    "dynvae.data.images": ("read_image_folders",),
    "dynvae.data.synthetic": ("SyntheticLGSSM", "random_stable_lgssm", "sample_lgssm",
                              "synthetic_lgssm", "synthetic_lgssm_dataset"),
}
_MODULE_OF = {name: module for module, names in _SOURCES.items() for name in names}

__all__ = sorted(_MODULE_OF)


def __getattr__(name: str):
    if name not in _MODULE_OF:
        raise AttributeError(f"module 'dynvae.data' has no attribute {name!r}")
    value = getattr(importlib.import_module(_MODULE_OF[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
