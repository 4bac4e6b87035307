"""Writing a :class:`SequenceDataset` to a CSV or Parquet table that the readers (and so
every ``--data FILE`` option of the command line) read back to the same dataset."""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path

from dynvae.data.dataset import SequenceDataset
from dynvae.errors import DataError
from dynvae.utils import atomic_write_bytes

_SINGULAR = {"years": "year", "beats": "beat", "frames": "frame", "days": "day",
             "hours": "hour", "seconds": "second"}


@dataclass(frozen=True)
class TableColumns:
    """The columns of an exported table: what ``read_table`` (and ``--id-col``,
    ``--time-col``, ``--value-cols``, ``--input-cols``) needs to read it back."""

    id_col: str | None
    time_col: str
    value_cols: list[str]
    input_cols: list[str]

    def cli_options(self) -> str:
        """The command-line options that read the table back, e.g.
        ``--time-col year --value-cols volume``."""
        parts = [] if self.id_col is None else [f"--id-col {self.id_col}"]
        parts.append(f"--time-col {self.time_col}")
        if len(self.value_cols) <= 8:
            parts.append(f"--value-cols {','.join(self.value_cols)}")
        if self.input_cols:
            parts.append(f"--input-cols {','.join(self.input_cols)}")
        return " ".join(parts)


def time_column_name(dataset: SequenceDataset) -> str:
    """``date`` for times parsed from dates, the singular of the time unit (``year``,
    ``beat``, ...) when it is known, else ``t``."""
    if dataset.time_origin is not None:
        return "date"
    return _SINGULAR.get(dataset.time_unit or "", "t")


def table_columns(dataset: SequenceDataset) -> TableColumns:
    """Column names of ``dataset`` as a table: an ``id`` column only with several
    sequences; names clashing with a feature get a leading underscore."""
    taken = set(dataset.feature_names) | set(dataset.input_names)

    def free(name: str) -> str:
        while name in taken:
            name = f"_{name}"
        return name

    id_col = free("id") if len(dataset) > 1 else None
    return TableColumns(id_col, free(time_column_name(dataset)), list(dataset.feature_names),
                        list(dataset.input_names))


def write_table(dataset: SequenceDataset, path: str | os.PathLike,
                overwrite: bool = False) -> TableColumns:
    """Write ``dataset`` in long format (one row per sequence and time, NaN as empty
    cells) to ``path`` (``.csv``, ``.csv.gz``, ``.parquet``/``.pq``), atomically.
    Dates are written as ISO timestamps. Returns the column names used.

    Raises DataError for an unknown suffix, FileExistsError when ``path`` exists and
    ``overwrite`` is False.
    """
    path = Path(path)
    suffixes = "".join(path.suffixes[-2:]).lower()
    kind = "parquet" if path.suffix.lower() in (".parquet", ".pq") else \
        "csv" if suffixes.endswith((".csv", ".csv.gz")) else None
    if kind is None:
        raise DataError(f"cannot write {path}: use a .csv, .csv.gz, .parquet or .pq file")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass --force to overwrite it")
    columns = table_columns(dataset)
    frame = dataset.to_frame(id_col=columns.id_col or "id", time_col=columns.time_col)
    if columns.id_col is None:
        frame = frame.drop(columns="id")
    times = frame[columns.time_col]
    if dataset.time_origin is not None:
        frame[columns.time_col] = dataset.to_timestamps(times.to_numpy())
    elif (times == times.round()).all() and times.abs().max() < 2**53:
        frame[columns.time_col] = times.astype("int64")        # 1871, not 1871.0
    buf = io.BytesIO()
    if kind == "parquet":
        frame.to_parquet(buf, index=False)
    else:
        compression = "gzip" if suffixes.endswith(".gz") else None
        frame.to_csv(buf, index=False, compression=compression, float_format=None,
                     na_rep="")
    atomic_write_bytes(path, buf.getvalue())
    return columns



def write_arrays(dataset: SequenceDataset, path: str | os.PathLike,
                 overwrite: bool = False) -> None:
    """Write ``dataset`` to an ``.npz`` file that :func:`dynvae.data.io.read_numpy` reads
    back: ``x`` (N, T, D), or frames (N, T, C, H, W) for a dataset with a frame shape,
    NaN where missing and beyond each sequence's end; ``t`` (N, T), ``lengths`` (N,),
    ``feature_names``, and ``u`` (N, T, U) and ``input_names`` when there are inputs.
    Written atomically. Raises FileExistsError when ``path`` exists and ``overwrite``
    is False."""
    import numpy as np
    path = Path(path)
    if path.suffix.lower() != ".npz":
        raise DataError(f"cannot write {path} as arrays: use a .npz file")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass --force to overwrite it")
    N, T = len(dataset), max(len(s) for s in dataset)
    lengths = np.array([len(s) for s in dataset])
    x = np.full((N, T, dataset.dim), np.nan)
    t = np.full((N, T), np.nan)
    for n, seq in enumerate(dataset):
        x[n, :len(seq)], t[n, :len(seq)] = seq.x, seq.t
    if dataset.frame_shape is not None:
        x = x.reshape(N, T, *dataset.frame_shape)
    arrays = dict(x=x, t=t, lengths=lengths, feature_names=np.array(dataset.feature_names))
    if dataset.input_names:
        u = np.zeros((N, T, len(dataset.input_names)))
        for n, seq in enumerate(dataset):
            u[n, :len(seq)] = seq.u
        arrays.update(u=u, input_names=np.array(dataset.input_names))
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())
