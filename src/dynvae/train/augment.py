"""Training-time data augmentation: hide extra observed entries at random.

Training on sequences with entries hidden at random teaches a model to impute
(the masking used by GP-VAE, Fortuin et al. 2020, Sec. 4). Each sequence draws its
own mask from a generator seeded by (seed, step, dataset index), so the result does
not depend on how a batch is split across processes.
"""

from __future__ import annotations

import torch

from dynvae.data.batch import SequenceBatch

_SEED_MIX = (1_000_003, 10_007)


def sequence_generator(seed: int, step: int, index: int) -> torch.Generator:
    """A CPU generator private to one (seed, step, dataset index) triple."""
    mixed = (seed * _SEED_MIX[0] + step) * _SEED_MIX[1] + index
    return torch.Generator().manual_seed(mixed % (2**63 - 1))


def drop_observed(batch: SequenceBatch, rate: float, seed: int, step: int,
                  indices: list[int]) -> SequenceBatch:
    """Hide each observed entry of ``batch`` with probability ``rate``.

    ``indices`` (B,) are the dataset indices of the batch's sequences. A sequence
    that would lose every observed entry keeps its original mask, so every sequence
    still has at least one observation. Returns a new batch; (B, T, D) shapes kept.
    """
    if rate <= 0.0:
        return batch
    B, T, D = batch.x.shape
    keep = torch.empty(B, T, D, dtype=torch.bool)
    for b, index in enumerate(indices):
        u = torch.rand(T, D, generator=sequence_generator(seed, step, index))  # (T, D)
        keep[b] = u >= rate
    new_mask = batch.mask & keep.to(batch.mask.device)  # (B, T, D)
    emptied = ~new_mask.any(dim=(1, 2))  # (B,)
    new_mask = torch.where(emptied[:, None, None], batch.mask, new_mask)
    return batch.with_mask(new_mask)
