"""Data layer: the SequenceBatch type, file readers, built-in and synthetic datasets."""

from dynvae.data.batch import SequenceBatch, validate_batch
from dynvae.data.dataset import Sequence, SequenceDataset, Standardizer, collate
from dynvae.data.datasets import DATASETS, DatasetInfo, list_datasets, load_dataset
from dynvae.data.io import (
    from_dataframe,
    from_numpy,
    read_csv,
    read_numpy,
    read_parquet,
    read_table,
)
from dynvae.data.synthetic import (
    SyntheticLGSSM,
    random_stable_lgssm,
    sample_lgssm,
    synthetic_lgssm,
    synthetic_lgssm_dataset,
)

__all__ = [
    "DATASETS",
    "DatasetInfo",
    "Sequence",
    "SequenceBatch",
    "SequenceDataset",
    "Standardizer",
    "SyntheticLGSSM",
    "collate",
    "from_dataframe",
    "from_numpy",
    "list_datasets",
    "load_dataset",
    "random_stable_lgssm",
    "read_csv",
    "read_numpy",
    "read_parquet",
    "read_table",
    "sample_lgssm",
    "synthetic_lgssm",
    "synthetic_lgssm_dataset",
    "validate_batch",
]
