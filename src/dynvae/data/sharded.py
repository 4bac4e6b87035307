"""Sharded sequence data on disk, read shard by shard and streamed to the trainer.

Layout written by ``dynvae data shard`` (:func:`dynvae.data.shard_writer.write_shards`)::

    DIR/index.json           format, columns, time origin/unit, and per sequence:
                             ids, lengths, shard, offset (first row in its shard)
    DIR/moments.npz          per sequence and feature: count, mean, m2 (float64), so the
                             Standardizer of any subset of sequences needs no data pass
    DIR/stats.json           the Standardizer state of the whole table
    DIR/shard-NNNNN.parquet  whole sequences, rows sorted by (id, time); columns
                             __id__, __t__, the value columns, the input columns

An epoch's plan (:meth:`ShardedDataset.epoch_plan`) is a pure function of the seed,
the epoch, the batch size and the number of processes: shards in a seeded order, the
sequences of each shard in a seeded order, the whole order cut into one contiguous
slice per rank (so a rank reads about 1/W of the shards), each slice into the same
number of batches. Every sequence is read exactly once per epoch, and a run resumed
at batch k of an epoch reads exactly what the uninterrupted run read from batch k on.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch

from dynvae.data.dataset import Sequence, SequenceDataset, Standardizer, collate, split_sizes
from dynvae.data.moments import combine
from dynvae.data.shard_input import ID, TIME
from dynvae.errors import DataError
from dynvae.train.batching import StreamedData
from dynvae.train.distributed import World

INDEX, MOMENTS, STATS = "index.json", "moments.npz", "stats.json"
FORMAT = "dynvae-shards-1"
__all__ = ["FORMAT", "ID", "INDEX", "MOMENTS", "STATS", "TIME", "ShardedDataset",
           "is_shard_dir"]


def is_shard_dir(path) -> bool:
    return Path(path).is_dir() and (Path(path) / INDEX).is_file()


class _Index:
    """The checked contents of index.json and moments.npz (shared by every view)."""

    def __init__(self, root: Path) -> None:
        where = root / INDEX
        try:
            meta = json.loads(where.read_text())
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as err:
            raise DataError(f"cannot read the shard index {where}: {err}") from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise DataError(f"{where} is not a dynvae shard index (format {FORMAT!r})")
        try:
            self.ids = [str(i) for i in meta["ids"]]
            self.lengths = np.asarray(meta["lengths"], dtype=np.int64)
            self.shard = np.asarray(meta["shard"], dtype=np.int64)
            self.offset = np.asarray(meta["offset"], dtype=np.int64)
            self.files = [root / str(name) for name in meta["shards"]]
            self.feature_names = [str(n) for n in meta["feature_names"]]
            self.input_names = [str(n) for n in meta["input_names"]]
            self.time_origin, self.time_unit = meta["time_origin"], meta["time_unit"]
        except (KeyError, TypeError, ValueError) as err:
            raise DataError(f"{where} is incomplete or damaged: {err!r}") from None
        n = len(self.ids)
        if not (len(self.lengths) == len(self.shard) == len(self.offset) == n) or n == 0 \
                or (self.lengths < 1).any() or self.shard.min() < 0 \
                or self.shard.max() >= len(self.files):
            raise DataError(f"{where}: ids, lengths, shard and offset disagree")
        self.moments_path = root / MOMENTS

    def moments(self, positions: np.ndarray) -> dict[str, np.ndarray]:
        """count/mean/m2 (len(positions), D) of the sequences at ``positions``, read only
        when needed (for 1e7 sequences the file is ~1 GB)."""
        where = self.moments_path
        try:
            with np.load(where, allow_pickle=False) as saved:
                arrays = {k: saved[k] for k in ("count", "mean", "m2")}
        except (OSError, KeyError, ValueError) as err:
            raise DataError(f"cannot read {where}: {err}") from None
        shape = (len(self.ids), len(self.feature_names))
        if any(m.shape != shape for m in arrays.values()):
            raise DataError(f"{where} does not match {where.parent / INDEX}")
        return {k: v[positions] for k, v in arrays.items()}


class ShardedDataset(StreamedData):
    """A view of some sequences (``positions`` in the index; default all) of a shard
    directory, optionally standardised on read. Offers what the trainer and the
    evaluation need of a :class:`SequenceDataset` (``len``, ``ids``, ``to_batch``) and
    reads shards one at a time (one cached)."""

    def __init__(self, path, positions=None, standardizer: Standardizer | None = None,
                 _index: _Index | None = None) -> None:
        self.path = Path(path)
        if _index is None and not is_shard_dir(self.path):
            raise DataError(f"{self.path} is not a shard directory (no {INDEX}); write one "
                            "with `dynvae data shard`")
        self._index = _index or _Index(self.path)
        n = len(self._index.ids)
        self.positions = np.arange(n) if positions is None else np.asarray(positions, np.int64)
        self.standardizer = standardizer
        self._cache: tuple[int, dict] | None = None

    # ---------------------------------------------------------------- as data
    def __len__(self) -> int:
        return len(self.positions)

    @property
    def ids(self) -> list[str]:
        return [self._index.ids[p] for p in self.positions]

    @property
    def lengths(self) -> np.ndarray:
        return self._index.lengths[self.positions]

    @property
    def feature_names(self) -> list[str]:
        return list(self._index.feature_names)

    @property
    def input_names(self) -> list[str]:
        return list(self._index.input_names)

    @property
    def dim(self) -> int:
        return len(self._index.feature_names)

    @property
    def input_dim(self) -> int:
        return len(self._index.input_names)

    @property
    def time_origin(self) -> str | None:
        return self._index.time_origin

    @property
    def time_unit(self) -> str | None:
        return self._index.time_unit

    def subset(self, indices) -> ShardedDataset:
        """The sequences at ``indices`` of this view (same standardizer)."""
        return ShardedDataset(self.path, self.positions[np.asarray(indices, np.int64)],
                              self.standardizer, self._index)

    def with_standardizer(self, standardizer: Standardizer | None) -> ShardedDataset:
        return ShardedDataset(self.path, self.positions, standardizer, self._index)

    def split(self, fractions=(0.8, 0.1, 0.1), seed: int = 0) -> tuple[ShardedDataset, ...]:
        """Disjoint parts by sequence, drawn as :meth:`SequenceDataset.split` draws them."""
        sizes = split_sizes(len(self), fractions)
        perm = np.random.default_rng(seed).permutation(len(self))
        bounds = np.cumsum([0, *sizes])
        return tuple(self.subset(np.sort(perm[a:b]))
                     for a, b in zip(bounds[:-1], bounds[1:], strict=True))

    def fit_standardizer(self) -> Standardizer:
        """The Standardizer that :meth:`Standardizer.fit` gives on these sequences, from
        their saved moments (no pass over the data)."""
        moments = self._index.moments(self.positions)
        mean, std = combine(**moments).mean_std(self.feature_names)
        return Standardizer(mean, std, self.feature_names)

    def sequences(self, indices) -> list[Sequence]:
        """The sequences at ``indices`` of this view, in that order (shards read once)."""
        rows = self.positions[np.asarray(indices, np.int64)]
        out: list[Sequence | None] = [None] * len(rows)
        for k in np.argsort(self._index.shard[rows], kind="stable"):
            p = rows[k]
            arrays = self._shard(int(self._index.shard[p]))
            a = int(self._index.offset[p])
            b = a + int(self._index.lengths[p])
            u = None if arrays["u"] is None else arrays["u"][a:b]
            out[k] = Sequence(t=arrays["t"][a:b], x=arrays["x"][a:b], u=u,
                              id=self._index.ids[p])
        return out

    def to_memory(self) -> SequenceDataset:
        """These sequences as an in-memory SequenceDataset (standardised if set)."""
        return SequenceDataset(self.sequences(range(len(self))), self.feature_names,
                               self.input_names, self.time_origin, self.time_unit)

    def to_batch(self, indices=None, dtype: torch.dtype = torch.float32, device=None):
        indices = range(len(self)) if indices is None else indices
        return collate(self.sequences(indices), dtype=dtype, device=device)

    def _shard(self, k: int) -> dict:
        if self._cache is not None and self._cache[0] == k:
            return self._cache[1]
        path = self._index.files[k]
        names = self.feature_names + self.input_names
        try:
            table = pq.read_table(path, columns=[TIME, *names])
        except (OSError, ValueError) as err:
            raise DataError(f"cannot read shard {path}: {err}") from None
        x = np.column_stack([table.column(c).to_numpy() for c in self.feature_names])
        if self.standardizer is not None:              # as Standardizer.transform does
            mean, std = self.standardizer.mean, self.standardizer.std
            x = (x - mean) / std
        u = (np.column_stack([table.column(c).to_numpy() for c in self.input_names])
             if self.input_names else None)
        arrays = {"t": np.array(table.column(TIME).to_numpy()), "x": x, "u": u}   # writable
        self._cache = (k, arrays)
        return arrays

    # ------------------------------------------------------------- streaming
    def epoch_plan(self, seed: int, epoch: int, batch_size: int, world_size: int
                   ) -> list[list[list[int]]]:
        """plan[rank][step]: the indices (into this view) of each rank's batch at each
        step of the epoch (see the module docstring). Slices differ by at most one
        sequence; every rank gets the same number of non-empty batches."""
        n, w = len(self), world_size
        if n < w:
            raise DataError(f"{n} sequences cannot be spread over {w} processes")
        gen = np.random.default_rng([seed, epoch, 0x5EED])
        shard_of = self._index.shard[self.positions]                       # (N,)
        order = np.concatenate([gen.permutation(np.flatnonzero(shard_of == s))
                                for s in gen.permutation(np.unique(shard_of))])
        sizes = n // w + (np.arange(w) < n % w)
        steps = min(math.ceil(n / batch_size), int(sizes.min()))
        starts = np.concatenate([[0], np.cumsum(sizes)])
        return [[b.tolist() for b in np.array_split(order[starts[r]:starts[r + 1]], steps)]
                for r in range(w)]

    def steps_per_epoch(self, batch_size: int, world_size: int) -> int:
        return min(math.ceil(len(self) / batch_size), len(self) // world_size)

    def stream(self, seed: int, epoch: int, batch_size: int, world: World, start: int,
               dtype: torch.dtype, device: torch.device, num_workers: int = 0):
        """(indices, batch on ``device``) for this rank's batches of the epoch from batch
        ``start`` on; ``num_workers`` > 0 reads them in DataLoader worker processes."""
        batches = self.epoch_plan(seed, epoch, batch_size, world.size)[world.rank][start:]
        source = _BatchStream(self, batches, dtype)
        if num_workers > 0:
            source = torch.utils.data.DataLoader(source, batch_size=None,
                                                 num_workers=num_workers)
        for indices, batch in source:
            yield indices, batch.to(device=device)


class _BatchStream(torch.utils.data.IterableDataset):
    """Worker w of K reads batches w, w + K, ...: DataLoader takes one item from each
    worker in turn, so the batches come out in the plan's order whatever K is."""

    def __init__(self, data: ShardedDataset, batches: list[list[int]], dtype) -> None:
        self.data, self.batches, self.dtype = data, batches, dtype

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        mine = self.batches if info is None else self.batches[info.id::info.num_workers]
        for indices in mine:
            yield indices, self.data.to_batch(indices, dtype=self.dtype,
                                              device=torch.device("cpu"))
