"""Write a table of any size as sharded Parquet, in memory bounded by one shard.

Two passes over the input, batch by batch (pyarrow), never the whole table:

1. every row goes to the bucket of its sequence id (a stable hash), appended to one
   temporary Arrow IPC file per bucket (uncompressed: written at memory speed); the
   per-feature moments of the whole table are accumulated meanwhile
   (:mod:`dynvae.data.moments`, float64);
2. each bucket is read alone, sorted by (id, time), checked like the in-memory reader
   checks a table, and written as one shard holding whole sequences.

The directory (see :mod:`dynvae.data.sharded` for the layout) is built beside the target
and renamed into place when complete, so a failed or interrupted run leaves nothing.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from dynvae.data import shard_input
from dynvae.data.moments import Moments, segment_moments
from dynvae.data.sharded import FORMAT, ID, INDEX, SEQUENCES, STATS, TIME, sequence_schema
from dynvae.errors import DataError
from dynvae.utils import atomic_write_json

_NS_PER_DAY = 86_400e9


@dataclass
class ShardSummary:
    path: Path
    rows: int
    sequences: int
    shards: int
    seconds: float


def write_shards(source, out_dir, id_col: str | None = None, time_col: str | None = None,
                 value_cols: list[str] | None = None, input_cols: list[str] | None = None,
                 shards: int | None = None, shard_mb: float = 64.0,
                 batch_rows: int = 65_536, force: bool = False) -> ShardSummary:
    """Shard the CSV or Parquet table ``source`` into ``out_dir``.

    ``shards``: number of hash buckets (default: one per ``shard_mb`` MB of input);
    a shard holds whole sequences, so its size is that of its sequences. Memory is
    bounded by one input batch (``batch_rows`` rows) in pass 1 and by the largest shard
    in pass 2. FileExistsError when ``out_dir`` exists, unless ``force``.
    """
    start = time.perf_counter()
    source, out_dir = Path(source), Path(out_dir)
    table = shard_input.open_table(source, id_col, time_col, value_cols, input_cols,
                                   batch_rows)
    if out_dir.exists() and not force:
        raise FileExistsError(f"{out_dir} exists; pass --force to replace it")
    if out_dir.exists() and not out_dir.is_dir():
        raise FileExistsError(f"{out_dir} exists and is not a directory")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not (out_dir / INDEX).is_file():
        raise FileExistsError(f"{out_dir} holds files but no shard index; --force replaces "
                              "shard directories only: choose another OUT_DIR")
    n_buckets = shards or max(1, math.ceil(source.stat().st_size / (shard_mb * 2 ** 20)))
    if n_buckets < 1:
        raise DataError(f"the number of shards must be >= 1, got {n_buckets}")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(work, 0o777 & ~umask)               # mkdtemp's 0o700 is for the build only
    try:
        moments, n_rows, t_min = _partition(table, work / "buckets", n_buckets)
        names = table.value_cols
        empty = [c for c, n in zip(names, moments.count, strict=True) if n == 0]
        if empty:
            raise DataError(f"value column(s) {empty} of {source} have no observed value "
                            "(all empty or NaN); leave them out of the value columns")
        origin = None if t_min is None else pd.Timestamp(t_min, unit="ns")
        index = _write_shard_files(work, n_buckets, table, origin)
        mean, std = moments.mean_std(names)
        atomic_write_json(work / STATS, {"mean": mean.tolist(), "std": std.tolist(),
                                         "feature_names": names, "count": moments.count.tolist()})
        index.update({"format": FORMAT, "source": str(source), "id_col": id_col,
                      "time_col": time_col, "feature_names": names,
                      "input_names": table.input_cols, "rows": n_rows,
                      "time_origin": None if origin is None else origin.isoformat(),
                      "time_unit": None if origin is None else "days"})
        atomic_write_json(work / INDEX, index)
        shutil.rmtree(work / "buckets")
        _move_into_place(work, out_dir)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return ShardSummary(out_dir, n_rows, index["sequences"], len(index["shards"]),
                        time.perf_counter() - start)


def _partition(table: shard_input.InputTable, folder: Path, n_buckets: int):
    """Pass 1: rows to their id's bucket file; moments, row count, earliest timestamp."""
    folder.mkdir()
    writers: dict[int, pa.ipc.RecordBatchFileWriter] = {}
    moments = Moments.empty(len(table.value_cols))
    rows, t_min = 0, None
    try:
        for part in table.batches():                     # shard_input.Part, checked
            moments = moments.update(part.x)
            if part.t_ns_min is not None:
                t_min = part.t_ns_min if t_min is None else min(t_min, part.t_ns_min)
            bucket = _bucket_of(part.ids, n_buckets)
            frame = part.to_arrow(rows)
            order = np.argsort(bucket, kind="stable")
            bounds = np.searchsorted(bucket[order], np.arange(n_buckets + 1))
            for b in np.flatnonzero(np.diff(bounds)):
                piece = frame.take(pa.array(order[bounds[b]:bounds[b + 1]]))
                if b not in writers:
                    writers[b] = pa.ipc.new_file(folder / f"bucket-{b:05d}.arrow",
                                                 piece.schema)
                writers[b].write_table(piece)
            rows += len(part.ids)
    finally:
        for writer in writers.values():
            writer.close()
    if rows == 0:
        raise DataError(f"{table.source} has no rows")
    return moments, rows, t_min


def _bucket_of(ids: np.ndarray, n_buckets: int) -> np.ndarray:
    """(rows,) bucket of each row: a hash of its id that is the same in every process
    and run (pandas' SipHash with its fixed key), so a sequence's rows meet in one file."""
    codes, uniques = pd.factorize(ids)
    hashes = pd.util.hash_array(np.asarray(uniques, dtype=object))
    return (hashes % np.uint64(n_buckets)).astype(np.int64)[codes]


def _write_shard_files(work: Path, n_buckets: int, table, origin) -> dict:
    """Pass 2: each bucket sorted and checked, written as ``shard-NNNNN.parquet``; its
    sequences' rows of the per-sequence table (id, length, shard, offset, moments) are
    appended to ``sequences.parquet`` as one row group, so nothing grows with the
    number of sequences in memory."""
    index = {"shards": [], "shard_rows": [], "sequences": 0}
    schema = sequence_schema(len(table.value_cols))
    with pq.ParquetWriter(work / SEQUENCES, schema) as sequences:
        for b in range(n_buckets):
            path = work / "buckets" / f"bucket-{b:05d}.arrow"
            if not path.is_file():
                continue
            with pa.memory_map(str(path)) as source:
                bucket = pa.ipc.open_file(source).read_all()
            shard, starts = _sorted_shard(bucket, table, origin)
            del bucket
            k = len(index["shards"])
            name = f"shard-{k:05d}.parquet"
            pq.write_table(shard, work / name)
            index["shards"].append(name)
            index["shard_rows"].append(shard.num_rows)
            index["sequences"] += len(starts)
            sequences.write_table(_sequence_rows(shard, starts, k, table.value_cols, schema))
    return index


def _sequence_rows(shard: pa.Table, starts: np.ndarray, k: int, value_cols: list[str],
                   schema: pa.Schema) -> pa.Table:
    """The rows of ``sequences.parquet`` for the sequences of shard ``k``."""
    x = np.column_stack([shard.column(c).to_numpy() for c in value_cols])
    seq = segment_moments(x, starts)                                      # (N, D) each
    columns = {"id": shard.column(ID).take(pa.array(starts)),
               "length": pa.array(np.diff(np.append(starts, shard.num_rows))),
               "shard": pa.array(np.full(len(starts), k, np.int32)),
               "offset": pa.array(starts.astype(np.int64))}
    for name, values in (("count", seq.count), ("mean", seq.mean), ("m2", seq.m2)):
        for d in range(values.shape[1]):
            columns[f"{name}_{d}"] = pa.array(values[:, d])
    return pa.table(columns, schema=schema)


def _sorted_shard(bucket: pa.Table, table, origin) -> tuple[pa.Table, np.ndarray]:
    """The bucket's rows sorted by (id, time), with float times; (sequences,) starts."""
    ids = bucket.column(ID).to_numpy(zero_copy_only=False)
    codes, uniques = pd.factorize(ids, sort=True)
    rows = bucket.column("__row__").to_numpy()
    if table.time_col is None:
        order = np.lexsort((rows, codes))
        starts = np.searchsorted(codes[order], np.arange(len(uniques)))
        t = (np.arange(len(order)) - np.repeat(starts, np.diff(np.append(starts, len(order)))
                                                 )).astype(np.float64)
    else:
        raw = bucket.column(TIME).to_numpy()
        order = np.lexsort((raw, codes))
        raw = raw[order]
        starts = np.searchsorted(codes[order], np.arange(len(uniques)))
        same = np.diff(raw) == 0
        same &= np.diff(codes[order]) == 0
        if same.any():
            k = int(np.argmax(same)) + 1
            raise DataError(f"sequence {uniques[codes[order][k]]!r} has duplicate time "
                            f"{_shown(raw[k], origin)} (rows {int(rows[order][k - 1])} and "
                            f"{int(rows[order][k])})")
        t = raw.astype(np.float64) if origin is None else (raw - origin.value) / _NS_PER_DAY
    sorted_rows = bucket.take(pa.array(order))
    x = np.column_stack([sorted_rows.column(c).to_numpy() for c in table.value_cols])
    observed = np.add.reduceat(~np.isnan(x), starts, axis=0).sum(axis=1)
    if (observed == 0).any():
        raise DataError(f"sequence {uniques[int(np.argmax(observed == 0))]!r} has no "
                        "observed value")
    columns = {ID: sorted_rows.column(ID), TIME: pa.array(t, pa.float64())}
    for name in table.value_cols + table.input_cols:
        columns[name] = sorted_rows.column(name)
    return pa.table(columns), starts


def _shown(raw, origin) -> str:
    return f"{raw:g}" if origin is None else pd.Timestamp(int(raw), unit="ns").isoformat()


def _move_into_place(work: Path, out_dir: Path) -> None:
    """Rename the finished ``work`` folder to ``out_dir``; an existing ``out_dir`` (only
    with force) is renamed aside first and removed once the new one is in place."""
    old = None
    if out_dir.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
        os.rmdir(old)
        out_dir.rename(old)
    work.rename(out_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
