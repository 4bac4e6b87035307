"""Evaluation of a trained model on a dataset: bounds per time step and per entry.

Sequence-model papers report the negative log-likelihood *per time step*
(Krishnan et al. 2017, Table 2: the summed bound over a test set divided by its
number of time steps); the training loss is per observed entry. Both are returned.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from dynvae.data.batch import SequenceBatch
from dynvae.models.base import DVAE
from dynvae.train.batching import StreamedData
from dynvae.train.distributed import World, all_reduce_sum, shard
from dynvae.train.evaluation import chunks

_SINGLE = World()


@dataclass(frozen=True)
class BoundSummary:
    """A bound summed over a dataset and its two normalisations."""

    total: float
    n_steps: int
    n_obs: int

    @property
    def per_step(self) -> float:
        return self.total / max(self.n_steps, 1)

    @property
    def per_obs(self) -> float:
        return self.total / max(self.n_obs, 1)


def iterate_batches(dataset, batch_size: int, world: World, dtype: torch.dtype,
                    device: torch.device):
    """This rank's share of ``dataset`` as SequenceBatch objects: the sequences in order
    of length where the dataset has ``lengths`` (:func:`dynvae.train.evaluation.chunks`),
    so that each batch, padded to its longest sequence, holds little padding; in order
    for data without lengths and for streamed data (StreamedData: read shard by shard)."""
    lengths = None if isinstance(dataset, StreamedData) else getattr(dataset, "lengths", None)
    for indices in chunks(len(dataset), batch_size, lengths):
        local = shard(indices, world)
        if local:
            yield dataset.to_batch(local, dtype=dtype, device=device)


def _summed_bound(model: DVAE, dataset, bound: Callable[[SequenceBatch], Tensor], *,
                  batch_size: int, seed: int, world: World) -> BoundSummary:
    """Sum ``bound(batch)`` (B,) over the dataset under a private, seeded RNG stream."""
    device = model.device
    dtype = next(model.parameters()).dtype
    totals = torch.zeros(3, dtype=torch.float64, device=device)
    was_training = model.training
    model.eval()
    cuda = [device] if device.type == "cuda" else []
    with torch.no_grad(), torch.random.fork_rng(devices=cuda):
        torch.manual_seed(seed + world.rank)
        for batch in iterate_batches(dataset, batch_size, world, dtype, device):
            totals[0] += bound(batch).double().sum()
            totals[1] += batch.lengths.sum()
            totals[2] += batch.n_observed().sum()
    model.train(was_training)
    totals = all_reduce_sum(totals, world)
    return BoundSummary(float(totals[0]), int(totals[1]), int(totals[2]))


def evaluate_elbo(model: DVAE, dataset, *, batch_size: int = 64, n_samples: int = 1,
                  seed: int = 0, world: World = _SINGLE) -> BoundSummary:
    """The ELBO (seed eq. 13) summed over ``dataset``."""
    return _summed_bound(model, dataset, lambda b: model.elbo(b, n_samples).elbo(),
                         batch_size=batch_size, seed=seed, world=world)


def evaluate_iwae(model: DVAE, dataset, *, k: int = 100, batch_size: int = 64,
                  seed: int = 0, world: World = _SINGLE) -> BoundSummary:
    """The importance-weighted bound with ``k`` samples (Burda et al. 2016) over ``dataset``."""
    return _summed_bound(model, dataset, lambda b: model.log_likelihood_bound(b, k),
                         batch_size=batch_size, seed=seed, world=world)


@torch.no_grad()
def missing_entry_metrics(model: DVAE, observed, complete, batch_size: int = 64,
                          standardizer=None) -> dict[str, float]:
    """Imputation of the entries that are *truly* missing in ``observed`` against the
    ground truth ``complete`` (same sequences, nothing missing), as in Fortuin et al.
    (2020, Table 1): mean squared error and, for truths in [0, 1], the Bernoulli
    cross-entropy of the imputed mean and the binary error rate: the share of missing
    entries whose imputed mean, rounded to 0 or 1, differs from the truth rounded
    (``test_missing_binary_error``; on binary frames the squared error of rounded
    imputations, the figure the GP-VAE paper's Healing MNIST evaluation reports as
    MSE). ``observed`` is on the model's scale; with a
    ``standardizer`` (a fitted dynvae.data.Standardizer), ``complete`` is on the original
    scale and the imputed means are mapped back to it before scoring, otherwise
    ``complete`` is on the model's scale too."""
    dtype = next(model.parameters()).dtype
    sq = bce = 0.0
    count = wrong = 0
    in_unit = True
    for start in range(0, len(observed), batch_size):
        idx = list(range(start, min(start + batch_size, len(observed))))
        batch = observed.to_batch(idx, dtype=dtype, device=model.device)
        truth = complete.to_batch(idx, dtype=dtype, device=model.device).x
        missing = batch.valid[..., None] & ~batch.mask                    # (B, T, D)
        mean = model.reconstruct(batch).mean
        if standardizer is not None:
            mean = standardizer.inverse_mean(mean)
        sq += float(((mean - truth) ** 2)[missing].sum())
        in_unit &= bool(((truth >= 0) & (truth <= 1)).all())
        p = mean.clamp(1e-6, 1 - 1e-6)
        bce -= float((truth * p.log() + (1 - truth) * (1 - p).log())[missing].sum())
        wrong += int(((mean > 0.5) != (truth > 0.5))[missing].sum())
        count += int(missing.sum())
    if count == 0:
        return {}
    out = {"test_missing_mse": sq / count, "test_missing_entries": float(count)}
    if in_unit:
        out["test_missing_bce"] = bce / count
        out["test_missing_binary_error"] = wrong / count
    return out
