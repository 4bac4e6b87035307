"""Data layer: the SequenceBatch type, file readers, built-in and synthetic datasets."""

from dynvae.data.batch import SequenceBatch, validate_batch

__all__ = ["SequenceBatch", "validate_batch"]
