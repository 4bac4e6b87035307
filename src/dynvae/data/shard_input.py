"""A CSV or Parquet table read batch by batch with pyarrow, each batch checked.

The checks are those of the in-memory reader (:func:`dynvae.data.io.from_dataframe`)
that can be made one batch at a time: known columns, numeric values, no inf, no missing
id or time, finite inputs; the checks that need a whole sequence (duplicate times, a
sequence with no observed value) are made per shard by the writer.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from dynvae.errors import DataError

ID, TIME, ROW = "__id__", "__t__", "__row__"
_CSV = (".csv",)
_PARQUET = (".parquet", ".pq")
_COMPRESSIONS = (".gz", ".bz2", ".zst", ".lz4")


@dataclass
class Part:
    """One checked batch: ids (rows,) str, t (rows,) float64 or int64 ns (None: row
    order), x (rows, D) float64 with NaN = missing, u (rows, U) float64 or None."""

    ids: np.ndarray
    t: np.ndarray | None
    x: np.ndarray
    u: np.ndarray | None
    t_ns_min: int | None
    names: list[str]
    input_names: list[str]

    def to_arrow(self, first_row: int) -> pa.Table:
        columns = {ID: pa.array(self.ids, pa.string()),
                   ROW: pa.array(np.arange(first_row, first_row + len(self.ids)))}
        if self.t is not None:
            columns[TIME] = pa.array(self.t)
        for d, name in enumerate(self.names):
            columns[name] = pa.array(self.x[:, d], pa.float64(), from_pandas=True)
        for d, name in enumerate(self.input_names):
            columns[name] = pa.array(self.u[:, d], pa.float64())
        return pa.table(columns)


@dataclass
class InputTable:
    source: Path
    id_col: str | None
    time_col: str | None
    value_cols: list[str]
    input_cols: list[str]
    time_is_date: bool
    batch_rows: int

    def batches(self) -> Iterator[Part]:
        first = 0
        for batch in _raw_batches(self.source, self._columns(), self._types(), self.batch_rows):
            yield self._check(batch, first)
            first += batch.num_rows

    def _columns(self) -> list[str]:
        return [c for c in (self.id_col, self.time_col) if c] + self.value_cols + self.input_cols

    def _types(self) -> dict[str, pa.DataType]:
        types = {c: pa.float64() for c in self.value_cols + self.input_cols}
        if self.id_col:
            types[self.id_col] = pa.string()
        if self.time_col:
            types[self.time_col] = pa.timestamp("ns") if self.time_is_date else pa.float64()
        return types

    def _check(self, batch: pa.RecordBatch, first: int) -> Part:
        n = batch.num_rows
        if self.id_col:
            col = batch.column(self.id_col)
            _no_nulls(col, f"id column {self.id_col!r}", first)
            ids = np.asarray(col.to_numpy(zero_copy_only=False), dtype=object)
        else:
            ids = np.full(n, self.source.name.split(".")[0] or "0", dtype=object)
        t, t_min = None, None
        if self.time_col:
            col = batch.column(self.time_col)
            _no_nulls(col, f"time column {self.time_col!r}", first)
            if self.time_is_date:
                t = pc.cast(col, pa.int64()).to_numpy()
                t_min = int(t.min()) if n else None
            else:
                t = col.to_numpy()
                if not np.isfinite(t).all():
                    row = first + int(np.argmax(~np.isfinite(t)))
                    raise DataError(f"time column {self.time_col!r} has a non-finite value at "
                                    f"row {row}")
        x = _floats(batch, self.value_cols)
        if np.isinf(x).any():
            row, d = np.argwhere(np.isinf(x))[0]
            raise DataError(f"column {self.value_cols[d]!r} has an inf value at row "
                            f"{first + row} (sequence {ids[row]!r})")
        u = _floats(batch, self.input_cols) if self.input_cols else None
        if u is not None and not np.isfinite(u).all():
            row, d = np.argwhere(~np.isfinite(u))[0]
            raise DataError(f"column {self.input_cols[d]!r} (an input) has a missing or inf "
                            f"value at row {first + row} (sequence {ids[row]!r})")
        return Part(ids, t, x, u, t_min, self.value_cols, self.input_cols)


def open_table(source: Path, id_col, time_col, value_cols, input_cols,
               batch_rows: int) -> InputTable:
    """Check the file and its columns (from its schema) before any row is read."""
    if not source.is_file():
        raise DataError(f"file not found: {source}" if not source.exists() else
                        f"not a file: {source}")
    schema = _schema(source)
    columns = list(schema.names)
    value_cols = list(value_cols) if value_cols else None
    input_cols = list(input_cols or [])
    requested = [c for c in (id_col, time_col) if c] + (value_cols or []) + input_cols
    unknown = [c for c in requested if c not in columns]
    if unknown:
        raise DataError(f"unknown column(s) {unknown} in {source}; available: {columns}")
    if len(set(requested)) != len(requested):
        raise DataError("the id, time, value and input columns must be distinct")
    if value_cols is None:
        rest = [c for c in columns if c not in requested]
        text = [c for c in rest if not _numeric(schema.field(c).type)]
        if text:        # the in-memory reader reports a typo; never drop a column silently
            raise DataError(f"column(s) {text} of {source} do not hold numbers (labels, or "
                            "a typo in a numeric column); name the value columns "
                            "(--value-cols)")
        value_cols = rest
        if not value_cols:
            raise DataError(f"{source} has no numeric value column besides the id, time and "
                            f"input columns; columns: {columns}")
    reserved = {ID, TIME, ROW} & set(value_cols + input_cols)
    if reserved:
        raise DataError(f"column names {sorted(reserved)} are reserved; rename them")
    is_date = False
    if time_col:
        kind = schema.field(time_col).type
        is_date = pa.types.is_timestamp(kind) or pa.types.is_date(kind)
        if not (is_date or _numeric(kind)):
            raise DataError(f"time column {time_col!r} holds {kind}; sharding reads numbers "
                            "or ISO 8601 dates (convert other date formats first)")
    if batch_rows < 1:
        raise DataError(f"batch_rows must be >= 1, got {batch_rows}")
    return InputTable(source, id_col, time_col, value_cols, input_cols, is_date, batch_rows)


def _kind(source: Path) -> str:
    suffixes = [s.lower() for s in source.suffixes]
    if len(suffixes) >= 2 and suffixes[-1] in _COMPRESSIONS:
        suffixes = suffixes[:-1]
    suffix = suffixes[-1] if suffixes else ""
    if suffix in _CSV:
        return "csv"
    if suffix in _PARQUET:
        return "parquet"
    raise DataError(f"unknown file suffix {suffix or '(none)'!r} of {source}; sharding reads "
                    f"{sorted(_CSV + _PARQUET)} (CSV also compressed)")


def _schema(source: Path) -> pa.Schema:
    try:
        if _kind(source) == "parquet":
            return pq.ParquetFile(source).schema_arrow
        with _csv_reader(source, {}, 1 << 20) as reader:
            return reader.schema
    except (pa.ArrowInvalid, OSError) as err:
        raise DataError(f"cannot read {source}: {_first_line(err)}") from None


def _csv_reader(source: Path, types: dict, block_bytes: int, columns=None):
    stream = pa.input_stream(str(source), compression="detect")
    return pacsv.open_csv(stream, read_options=pacsv.ReadOptions(block_size=block_bytes),
                          convert_options=pacsv.ConvertOptions(
                              column_types=types, include_columns=columns,
                              strings_can_be_null=True))


def _raw_batches(source: Path, columns: list[str], types: dict, batch_rows: int
                 ) -> Iterator[pa.RecordBatch]:
    try:
        if _kind(source) == "parquet":
            # pre_buffer (the default) keeps every row group read so far: memory grows
            # with the file; unbuffered reads keep one row group at a time
            parquet = pq.ParquetFile(source, pre_buffer=False, buffer_size=1 << 20)
            for batch in parquet.iter_batches(batch_size=batch_rows, columns=columns):
                yield pa.RecordBatch.from_arrays(
                    [pc.cast(batch.column(c), types[c]) for c in columns], names=columns)
            return
        # roughly batch_rows rows of ~16 bytes per column per block
        block = max(1 << 16, batch_rows * 16 * len(columns))
        with _csv_reader(source, types, block, columns) as reader:
            yield from reader
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError) as err:
        raise DataError(f"cannot read {source}: {_first_line(err)}") from None


def _floats(batch: pa.RecordBatch, names: list[str]) -> np.ndarray:
    """(rows, len(names)) float64, nulls as NaN."""
    if not names:
        return np.zeros((batch.num_rows, 0))
    return np.column_stack([batch.column(c).to_numpy(zero_copy_only=False)
                            .astype(np.float64) for c in names])


def _no_nulls(col: pa.Array, what: str, first: int) -> None:
    if col.null_count:
        row = first + int(np.argmax(col.is_null().to_numpy(zero_copy_only=False)))
        raise DataError(f"{what} has a missing value at row {row}")


def _numeric(kind: pa.DataType) -> bool:
    """Numbers, booleans, or a column with no value at all (null type)."""
    return (pa.types.is_null(kind) or pa.types.is_integer(kind) or pa.types.is_floating(kind)
            or pa.types.is_boolean(kind))


def _first_line(err: Exception) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0]
