"""Sharded sequence data on disk, read shard by shard and streamed to the trainer.

Layout written by ``dynvae data shard`` (:func:`dynvae.data.shard_writer.write_shards`)::

    DIR/index.json           format, columns, shard files, time origin/unit (small)
    DIR/sequences.parquet    one row per sequence, one row group per shard: id, length,
                             shard, offset (first row in its shard), and per feature
                             count_d, mean_d, m2_d (float64), so the Standardizer of any
                             subset of sequences needs no data pass
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
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

from dynvae.data.dataset import Sequence, SequenceDataset, Standardizer, collate, split_sizes
from dynvae.data.moments import Moments, combine
from dynvae.data.shard_input import ID, TIME
from dynvae.errors import DataError
from dynvae.train.batching import StreamedData
from dynvae.train.distributed import World

INDEX, SEQUENCES, STATS = "index.json", "sequences.parquet", "stats.json"
FORMAT = "dynvae-shards-2"
MOMENT_ROWS = 1 << 18          # sequences' moments combined at a time


def sequence_schema(dim: int) -> pa.Schema:
    """Columns of ``sequences.parquet`` for ``dim`` features."""
    fields = [("id", pa.string()), ("length", pa.int64()), ("shard", pa.int32()),
              ("offset", pa.int64())]
    fields += [(f"{name}_{d}", pa.int64() if name == "count" else pa.float64())
               for name in ("count", "mean", "m2") for d in range(dim)]
    return pa.schema(fields)


__all__ = ["FORMAT", "ID", "INDEX", "SEQUENCES", "STATS", "TIME", "ShardedDataset",
           "is_shard_dir", "sequence_schema"]


def is_shard_dir(path) -> bool:
    return Path(path).is_dir() and (Path(path) / INDEX).is_file()


class _Index:
    """The checked contents of index.json and the numeric columns of sequences.parquet
    (shared by every view): 20 bytes per sequence; ids and moments are read from disk
    when asked for."""

    def __init__(self, root: Path) -> None:
        where = root / INDEX
        try:
            meta = json.loads(where.read_text())
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as err:
            raise DataError(f"cannot read the shard index {where}: {err}") from None
        if not isinstance(meta, dict) or not str(meta.get("format", "")).startswith(
                "dynvae-shards"):
            raise DataError(f"{where} is not a dynvae shard index (format {FORMAT!r})")
        if meta["format"] != FORMAT:
            raise DataError(f"{root} was written in format {meta['format']!r}, this dynvae "
                            f"reads {FORMAT!r}: write it again with `dynvae data shard`")
        try:
            self.files = [root / str(name) for name in meta["shards"]]
            self.feature_names = [str(n) for n in meta["feature_names"]]
            self.input_names = [str(n) for n in meta["input_names"]]
            self.time_origin, self.time_unit = meta["time_origin"], meta["time_unit"]
            n = int(meta["sequences"])
        except (KeyError, TypeError, ValueError) as err:
            raise DataError(f"{where} is incomplete or damaged: {err!r}") from None
        self.sequences_path = root / SEQUENCES
        self.lengths, self.offset = np.zeros(n, np.int64), np.zeros(n, np.int64)
        self.shard = np.zeros(n, np.int32)
        end = 0
        for first, batch in self._batches(["length", "shard", "offset"], total=n):
            end = first + batch.num_rows
            for k, array in enumerate((self.lengths, self.shard, self.offset)):
                array[first:end] = batch.column(k).to_numpy()
        if end != n or n == 0 or (self.lengths < 1).any() \
                or self.shard.min() < 0 or self.shard.max() >= len(self.files):
            raise DataError(f"{where} and {self.sequences_path.name}: sequences, lengths "
                            "and shards disagree")

    def __len__(self) -> int:
        return len(self.lengths)

    def _batches(self, columns: list[str], total: int | None = None):
        """(first position, record batch) over sequences.parquet, MOMENT_ROWS at a time.
        Without pre-buffering (which keeps every row group read so far) memory stays
        at one block; more than ``total`` rows is a DataError."""
        try:
            first = 0
            source = pq.ParquetFile(self.sequences_path, pre_buffer=False)
            for batch in source.iter_batches(MOMENT_ROWS, columns=columns):
                if total is not None and first + batch.num_rows > total:
                    raise DataError(f"{self.sequences_path} holds more sequences than its "
                                    f"index ({total})")
                yield first, batch
                first += batch.num_rows
        except (OSError, ValueError, pa.ArrowException) as err:
            raise DataError(f"cannot read {self.sequences_path}: {err}") from None

    def ids(self, positions: np.ndarray) -> list[str]:
        """The ids of the sequences at ``positions``, in that order."""
        wanted = np.zeros(len(self), bool)
        wanted[positions] = True
        found: dict[int, str] = {}
        for first, batch in self._batches(["id"]):
            rows = np.flatnonzero(wanted[first:first + batch.num_rows])
            values = batch.column(0).take(pa.array(rows)).to_pylist()
            found.update(zip((first + rows).tolist(), values, strict=True))
        return [found[int(p)] for p in positions]

    def positions_of(self, ids: list[str]) -> np.ndarray:
        """The positions of the sequences named ``ids``; DataError naming the first id
        that is not in the index."""
        wanted = pa.array(list(ids), pa.string())
        found: dict[str, int] = {}
        for first, batch in self._batches(["id"]):
            hits = np.flatnonzero(pc.is_in(batch.column(0), value_set=wanted)
                                  .to_numpy(zero_copy_only=False))
            found.update(zip(batch.column(0).take(pa.array(hits)).to_pylist(),
                             (first + hits).tolist(), strict=True))
        missing = [i for i in ids if i not in found]
        if missing:
            raise DataError(f"sequence {missing[0]!r} is not in {self.sequences_path.parent}"
                            f" ({len(missing)} of {len(ids)} ids missing)")
        return np.array([found[i] for i in ids], np.int64)

    def moments(self, positions: np.ndarray) -> Moments:
        """The moments of the observed values of the sequences at ``positions`` together
        (Chan et al. 1979), combined MOMENT_ROWS sequences at a time."""
        d = len(self.feature_names)
        wanted = np.zeros(len(self), bool)
        wanted[positions] = True
        total = Moments.empty(d)
        names = [f"{m}_{k}" for m in ("count", "mean", "m2") for k in range(d)]
        for first, batch in self._batches(names):
            rows = wanted[first:first + batch.num_rows]
            cols = [batch.column(i).to_numpy()[rows] for i in range(3 * d)]
            count, mean, m2 = (np.column_stack(cols[j * d:(j + 1) * d]) for j in range(3))
            total = total.merge(combine(count, mean, m2))
        return total


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
        n = len(self._index)
        self.positions = np.arange(n) if positions is None else np.asarray(positions, np.int64)
        self.standardizer = standardizer
        self._cache: tuple[int, dict] | None = None

    # ---------------------------------------------------------------- as data
    def __len__(self) -> int:
        return len(self.positions)

    @property
    def ids(self) -> list[str]:
        """The ids of this view's sequences (read from disk: for views of millions of
        sequences prefer ``len`` and ``lengths``)."""
        return self._index.ids(self.positions)

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

    def with_ids(self, ids: list[str]) -> ShardedDataset:
        """The view of the sequences named ``ids``, in that order (one pass over the ids
        on disk, not over the data)."""
        return ShardedDataset(self.path, self._index.positions_of(ids), self.standardizer,
                              self._index)

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
        mean, std = self._index.moments(self.positions).mean_std(self.feature_names)
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
                              id=arrays["id"][a].as_py())
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
            table = pq.read_table(path, columns=[ID, TIME, *names])
        except (OSError, ValueError) as err:
            raise DataError(f"cannot read shard {path}: {err}") from None
        x = np.column_stack([table.column(c).to_numpy() for c in self.feature_names])
        if self.standardizer is not None:              # as Standardizer.transform does
            mean, std = self.standardizer.mean, self.standardizer.std
            x = (x - mean) / std
        u = (np.column_stack([table.column(c).to_numpy() for c in self.input_names])
             if self.input_names else None)
        arrays = {"t": np.array(table.column(TIME).to_numpy()), "x": x, "u": u,  # writable
                  "id": table.column(ID)}
        self._cache = (k, arrays)
        return arrays

    # ------------------------------------------------------------- streaming
    def epoch_plan(self, seed: int, epoch: int, batch_size: int, world_size: int
                   ) -> list[list[list[int]]]:
        """plan[rank][step]: the indices (into this view) of each rank's batch at each
        step of the epoch (see the module docstring). Slices differ by at most one
        sequence; every rank gets the same number of non-empty batches."""
        order = self._epoch_order(seed, epoch, world_size)
        return [[b.tolist() for b in self._rank_batches(order, batch_size, world_size, r)]
                for r in range(world_size)]

    def rank_plan(self, seed: int, epoch: int, batch_size: int, world_size: int,
                  rank: int) -> list[np.ndarray]:
        """Rank ``rank``'s part of :meth:`epoch_plan`, as (batch,) index arrays (8 bytes a
        sequence, not a Python int each)."""
        order = self._epoch_order(seed, epoch, world_size)
        return self._rank_batches(order, batch_size, world_size, rank)

    def _epoch_order(self, seed: int, epoch: int, world_size: int) -> np.ndarray:
        """(N,) this view's indices in the epoch's order: shards in a seeded order, the
        sequences of each shard in a seeded order."""
        if len(self) < world_size:
            raise DataError(f"{len(self)} sequences cannot be spread over {world_size} "
                            "processes")
        gen = np.random.default_rng([seed, epoch, 0x5EED])
        shard_of = self._index.shard[self.positions]                       # (N,)
        by_shard = np.argsort(shard_of, kind="stable")
        bounds = np.searchsorted(shard_of[by_shard], np.arange(len(self._index.files) + 1))
        present = np.flatnonzero(np.diff(bounds))
        return np.concatenate([gen.permutation(by_shard[bounds[s]:bounds[s + 1]])
                               for s in gen.permutation(present)])

    def _rank_batches(self, order: np.ndarray, batch_size: int, world_size: int,
                      rank: int) -> list[np.ndarray]:
        """Rank ``rank``'s contiguous slice of ``order`` cut into the epoch's batches."""
        n, w = len(order), world_size
        sizes = n // w + (np.arange(w) < n % w)
        steps = min(math.ceil(n / batch_size), int(sizes.min()))
        starts = np.concatenate([[0], np.cumsum(sizes)])
        return np.array_split(order[starts[rank]:starts[rank + 1]], steps)

    def steps_per_epoch(self, batch_size: int, world_size: int) -> int:
        return min(math.ceil(len(self) / batch_size), len(self) // world_size)

    def stream(self, seed: int, epoch: int, batch_size: int, world: World, start: int,
               dtype: torch.dtype, device: torch.device, num_workers: int = 0):
        """(indices, batch on ``device``) for this rank's batches of the epoch from batch
        ``start`` on; ``num_workers`` > 0 reads them in DataLoader worker processes."""
        batches = self.rank_plan(seed, epoch, batch_size, world.size, world.rank)[start:]
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
            yield indices.tolist(), self.data.to_batch(indices, dtype=self.dtype,
                                                       device=torch.device("cpu"))
