"""Training-time data augmentation: hide extra observed entries at random, and train
on windows of the sequences whose length grows to the whole sequence (horizon warm-up).

Training on sequences with entries hidden at random teaches a model to impute
(the masking used by GP-VAE, Fortuin et al. 2020, Sec. 4). Each sequence draws its
own mask (and its window's start) from a generator seeded by (seed, step, dataset
index), so the result does not depend on how a batch is split across processes.

Windows: a model whose whole path follows from one initial state (the latent ODE
with ``segment_steps=None``)
meets a loss that oscillates in its frequencies when it is fitted to many periods at
once, and stays at the per-feature mean (docs/models.md#horizon-warm-up). Fitted to
short windows first, it learns the local dynamics, which the longer windows then
extend: each sequence of length L trains on a window of
``round(start * (L / start) ** progress)`` consecutive steps at a random position,
``progress`` going from 0 to 1 over the warm-up. Times are kept as they are (a window
is the same sequence observed over a shorter interval).
"""

from __future__ import annotations

import torch
from torch import Tensor

from dynvae.data.batch import SequenceBatch

_SEED_MIX = (1_000_003, 10_007)
_WINDOW_SEED = 7_919  # offsets the window generator from the one of drop_observed


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


def window_length(length: int, start: int, progress: float) -> int:
    """Steps of a training window of a sequence of ``length`` steps at ``progress`` in
    [0, 1] of the horizon warm-up: ``start`` steps at 0, growing geometrically to the
    whole sequence at 1 (never more than ``length``, never fewer than 1)."""
    if length <= start:
        return length
    return round(start * (length / start) ** min(max(progress, 0.0), 1.0))


def crop_windows(batch: SequenceBatch, start: int, progress: float, seed: int, step: int,
                 indices: list[int]) -> SequenceBatch:
    """Each sequence of ``batch`` cut to one window of :func:`window_length` steps at a
    random start (drawn per sequence from (seed, step, dataset index)).

    A window without an observed entry is replaced by the whole sequence, so every
    sequence keeps at least one observation. The result is a new padded batch (padding
    as :func:`dynvae.data.dataset.collate` makes it: x = 0, mask = False, u = 0, times
    continuing past the last one with its last step).
    """
    B, T, D = batch.x.shape
    lengths = batch.lengths.tolist()
    widths = [window_length(n, start, progress) for n in lengths]
    starts = [int(torch.randint(0, n - w + 1, (1,), generator=sequence_generator(
        seed + _WINDOW_SEED, step, index))) for n, w, index in zip(lengths, widths, indices,
                                                                  strict=True)]
    # observed steps in each window, from a running count (one transfer for the batch)
    seen = torch.nn.functional.pad(batch.mask.any(-1).long().cumsum(1), (1, 0))  # (B, T+1)
    ends = torch.tensor([a + w for a, w in zip(starts, widths, strict=True)],
                        device=seen.device)
    begins = torch.tensor(starts, device=seen.device)
    counts = (seen.gather(1, ends[:, None]) - seen.gather(1, begins[:, None]))[:, 0].tolist()
    for b, count in enumerate(counts):
        if count == 0:                          # nothing observed in it: the whole sequence
            starts[b], widths[b] = 0, lengths[b]
    device = batch.x.device
    width = torch.tensor(widths, dtype=torch.long, device=device)         # (B,)
    first = torch.tensor(starts, dtype=torch.long, device=device)         # (B,)
    Tw = max(widths)
    j = torch.arange(Tw, device=device)
    inside = j[None] < width[:, None]                                      # (B, Tw)
    src = (first[:, None] + j[None]).clamp(max=T - 1)                      # (B, Tw)

    def take(v: Tensor) -> Tensor:                                         # (B, T, F) rows
        return v.gather(1, src[..., None].expand(B, Tw, v.shape[-1]))

    x = take(batch.x) * inside[..., None]
    mask = take(batch.mask) & inside[..., None]
    u = None if batch.u is None else take(batch.u) * inside[..., None]
    t = batch.t.gather(1, src)                                             # (B, Tw)
    last = (first + width - 1)[:, None]                                    # (B, 1)
    t_last = batch.t.gather(1, last)
    t_prev = batch.t.gather(1, (last - 1).clamp(min=0))
    dt = torch.where(width[:, None] > 1, t_last - t_prev, torch.ones_like(t_last))
    past = (j[None] - width[:, None] + 1).to(t)                            # (B, Tw)
    t = torch.where(inside, t, t_last + dt * past)
    return SequenceBatch(x=x, mask=mask, t=t, lengths=width, u=u,
                         frame_shape=batch.frame_shape)
