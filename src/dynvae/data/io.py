"""Readers turning CSV, Parquet and NumPy files into a :class:`SequenceDataset`.

Tables are in *long* format: one row per (sequence id, time) and one column per
feature; without an id column the whole table is one sequence (*wide* format).
Empty cells and NaN mean missing. Every reader validates its input and raises
:class:`~dynvae.errors.DataError` with one message naming the problem.
"""

from __future__ import annotations

import csv
import os
import re
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from pandas.api import types as ptypes

from dynvae.data.dataset import Sequence, SequenceDataset
from dynvae.data.dates import days_since_first, parse_dates_in_format, parse_text_dates
from dynvae.errors import DataError

_COMPRESSIONS = (".gz", ".bz2", ".xz", ".zst", ".zip")
_NPZ_KEYS = ("x", "t", "u", "lengths", "feature_names", "input_names")


def read_table(path, id_col: str | None = None, time_col: str | None = None,
               value_cols: list[str] | None = None, input_cols: list[str] | None = None,
               date_format: str | None = None) -> SequenceDataset:
    """Read ``path`` with the reader chosen by its suffix.

    ``.csv`` (also compressed, e.g. ``.csv.gz``), ``.parquet``/``.pq`` and
    ``.npy``/``.npz`` (see :func:`read_numpy`) are known, and a folder of image folders
    (one per sequence, see :func:`dynvae.data.images.read_image_folders`). The
    keywords are those of :func:`from_dataframe`.
    """
    if Path(os.fspath(path)).is_dir():
        from dynvae.data.images import read_image_folders
        reader = read_image_folders
    else:
        reader = _reader_for(Path(path))
    return reader(path, id_col=id_col, time_col=time_col, value_cols=value_cols,
                  input_cols=input_cols, date_format=date_format)


def read_csv(path, id_col: str | None = None, time_col: str | None = None,
             value_cols: list[str] | None = None, input_cols: list[str] | None = None,
             date_format: str | None = None) -> SequenceDataset:
    """Read a CSV table (see :func:`from_dataframe` for the keywords)."""
    path = _existing_file(path)
    dtype = {id_col: str} if id_col is not None else None
    try:
        # skipinitialspace: "11, NA" reads NA as missing, as "11,NA" does
        frame = pd.read_csv(path, dtype=dtype, float_precision="round_trip",
                            skipinitialspace=True)
    except pd.errors.EmptyDataError:
        raise DataError(f"{path} is empty: no header and no rows") from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as err:
        raise DataError(f"cannot parse CSV file {path}: {err}") from None
    _check_short_rows(path, frame.shape[1])
    try:
        return from_dataframe(frame, id_col, time_col, value_cols, input_cols,
                              default_id=_stem(path), source=str(path),
                              date_format=date_format)
    except DataError as err:
        raise DataError(_with_file_lines(str(err), path)) from None


def _check_short_rows(path: Path, n_columns: int) -> None:
    """DataError for a line with fewer fields than the header (the reader would fill the
    missing ones with NaN, as if they were empty cells); uncompressed files only."""
    if path.suffix.lower() != ".csv":
        return
    with open(path, newline="", encoding="utf-8", errors="replace") as f:
        reader = csv.reader(f, skipinitialspace=True)
        next(reader, None)                                           # the header
        for row in reader:
            if row and len(row) < n_columns:
                raise DataError(
                    f"line {reader.line_num} of {path.name} has {len(row)} fields where the "
                    f"header has {n_columns}; write a missing value as an empty field "
                    f"(e.g. {','.join(row)},)")


def _with_file_lines(message: str, path: Path) -> str:
    """"at row 100" -> "at row 100 (line 102 of co2.csv)": the table's 0-based data row
    and the line an editor shows (after the header line; blank lines, which the reader
    skips, would shift it)."""
    message = re.sub(r"\(rows (\d+) and (\d+)\)", lambda m: (
        f"(rows {m[1]} and {m[2]}; lines {int(m[1]) + 2} and {int(m[2]) + 2} of "
        f"{path.name})"), message)
    return re.sub(r"\bat row (\d+)",
                  lambda m: f"at row {m[1]} (line {int(m[1]) + 2} of {path.name})", message)


def read_parquet(path, id_col: str | None = None, time_col: str | None = None,
                 value_cols: list[str] | None = None, input_cols: list[str] | None = None,
                 date_format: str | None = None) -> SequenceDataset:
    """Read a Parquet table (see :func:`from_dataframe` for the keywords)."""
    path = _existing_file(path)
    try:
        frame = pd.read_parquet(path)
    except (OSError, ValueError) as err:           # pyarrow's ArrowInvalid is a ValueError
        raise DataError(f"cannot read Parquet file {path}: {err}") from None
    return from_dataframe(frame, id_col, time_col, value_cols, input_cols,
                          default_id=_stem(path), source=str(path), date_format=date_format)


def read_numpy(path, id_col=None, time_col=None, value_cols=None, input_cols=None,
               date_format=None) -> SequenceDataset:
    """Read ``.npy`` holding x (N, T, D) or image frames (N, T, H, W) / (N, T, C, H, W),
    or ``.npz`` holding such an ``x`` and optionally
    ``t`` (T,) or (N, T), ``u`` (N, T, U), ``lengths`` (N,), ``feature_names`` (D,) and
    ``input_names`` (U,); see :func:`from_numpy`. Column keywords do not apply."""
    path = _existing_file(path)
    refuse_table_options(f"a NumPy file holds arrays named {list(_NPZ_KEYS)}",
                         id_col=id_col, time_col=time_col, value_cols=value_cols,
                         input_cols=input_cols, date_format=date_format)
    try:
        loaded = np.load(path, allow_pickle=False)
        if isinstance(loaded, np.ndarray):
            return from_numpy(loaded)
        with loaded:
            arrays = {k: loaded[k] for k in loaded.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise DataError(f"cannot read NumPy file {path}: {err}") from None
    unknown = sorted(set(arrays) - set(_NPZ_KEYS))
    if "x" not in arrays or unknown:
        raise DataError(f"{path} must hold an array 'x' and optionally {list(_NPZ_KEYS[1:])}; "
                        f"found {sorted(arrays)}" + (f", unknown {unknown}" if unknown else ""))
    for key in ("feature_names", "input_names"):
        if key in arrays:
            arrays[key] = [str(v) for v in arrays[key].reshape(-1)]
    return from_numpy(**arrays)


def _reader_for(path: Path) -> Callable[..., SequenceDataset]:
    suffixes = [s.lower() for s in path.suffixes]
    if len(suffixes) >= 2 and suffixes[-1] in _COMPRESSIONS:
        suffixes = suffixes[:-1]
    suffix = suffixes[-1] if suffixes else ""
    readers = {".csv": read_csv, ".parquet": read_parquet, ".pq": read_parquet,
               ".npy": read_numpy, ".npz": read_numpy}
    if suffix not in readers:
        raise DataError(f"unknown file suffix {suffix or '(none)'!r} of {path}; "
                        f"known: {sorted(readers)}")
    return readers[suffix]


def refuse_table_options(why: str, **options) -> None:
    """DataError naming the table options (id_col, time_col, ...) that were given to a
    reader of arrays or images, where they do not apply; ``why`` says what it reads."""
    given = sorted(k for k, v in options.items() if v is not None)
    if given:
        raise DataError(f"{given} apply to tables only; {why}")


def _existing_file(path) -> Path:
    path = Path(os.fspath(path))
    if not path.exists():
        raise DataError(f"file not found: {path}")
    if not path.is_file():
        raise DataError(f"not a file: {path}")
    return path


def _stem(path: Path) -> str:
    return path.name.split(".")[0] or "0"


# ------------------------------------------------------------------- tables
def from_dataframe(frame: pd.DataFrame, id_col: str | None = None,
                   time_col: str | None = None, value_cols: list[str] | None = None,
                   input_cols: list[str] | None = None, default_id: str = "0",
                   source: str = "table", date_format: str | None = None) -> SequenceDataset:
    """Build a dataset from a long-format table.

    Args:
        frame: one row per (sequence, time).
        id_col: column naming the sequence of each row; None: one sequence
            called ``default_id``. Sequences keep the order of first appearance.
        time_col: numeric, date-like or duration times. Dates become float days
            since the earliest timestamp of the table (``time_origin``,
            ``time_unit="days"``); durations become float days. Text dates must all
            be ISO 8601 or all follow one format; mixed formats, and formats that
            read two ways (``01/03/2021``: 1 March or 3 January), are a DataError
            naming the rows unless ``date_format`` says which.
            Rows are sorted by time within each sequence. None: times 0..T-1 in
            row order.
        value_cols: feature columns; None: every other column holding numbers (a
            text column with any number in it counts, so a typo is reported). A text
            column left over while ``id_col`` or ``time_col`` is None is a DataError
            (it may be the ids or the dates that were not named); a numeric column
            named like a time (``TIME_NAMES``) read as a value while ``time_col`` is
            None is warned of.
        input_cols: columns of known inputs u (finite at every row).
        source: name used in error messages.
        date_format: strftime format of text dates in ``time_col`` (e.g.
            ``"%d/%m/%Y"``); every value must match it.
    """
    if frame.shape[0] == 0 or frame.shape[1] == 0:
        raise DataError(f"{source} is empty: {frame.shape[0]} rows, {frame.shape[1]} columns")
    frame = frame.set_axis([str(c) for c in frame.columns], axis=1)
    columns = list(frame.columns)
    if len(set(columns)) != len(columns):
        dup = sorted({c for c in columns if columns.count(c) > 1})
        raise DataError(f"{source} has duplicate column names {dup}")
    value_cols, input_cols = _resolve_columns(frame, id_col, time_col, value_cols,
                                              input_cols, source)
    codes, ids = _sequence_codes(frame, id_col, default_id)
    if time_col is None:
        t = pd.Series(codes).groupby(codes).cumcount().to_numpy(np.float64)
        origin = unit = None
    else:
        t, origin, unit = _parse_times(frame[time_col], time_col, date_format)
    x = np.column_stack([_numeric(frame[c], c) for c in value_cols])           # (rows, D)
    empty = [c for c, column in zip(value_cols, x.T, strict=True) if np.isnan(column).all()]
    if empty:
        raise DataError(f"value column(s) {empty} of {source} have no observed value (all "
                        "empty or NaN); leave them out of the value columns")
    u = (np.column_stack([_numeric(frame[c], c) for c in input_cols])          # (rows, U)
         if input_cols else None)
    _check_finite(x, value_cols, codes, ids, "has an inf value", np.isinf)
    if u is not None:
        _check_finite(u, input_cols, codes, ids, "(an input) has a missing or inf value",
                      lambda a: ~np.isfinite(a))
    order = np.lexsort((t, codes))                       # stable: by id, then time
    bounds = np.concatenate([[0], np.cumsum(np.bincount(codes, minlength=len(ids)))])
    _check_duplicate_times(t[order], codes[order], ids, frame, time_col, order)
    sequences = [
        Sequence(t=t[order[a:b]], x=x[order[a:b]], u=None if u is None else u[order[a:b]],
                 id=ids[k])
        for k, (a, b) in enumerate(zip(bounds[:-1], bounds[1:], strict=True))
    ]
    return SequenceDataset(sequences, list(value_cols), list(input_cols), time_origin=origin,
                           time_unit=unit)


def _resolve_columns(frame, id_col, time_col, value_cols, input_cols, source):
    columns = list(frame.columns)
    value_cols = [value_cols] if isinstance(value_cols, str) else value_cols
    input_cols = [] if input_cols is None else (
        [input_cols] if isinstance(input_cols, str) else list(input_cols))
    requested = [c for c in (id_col, time_col) if c is not None]
    requested += list(value_cols or []) + input_cols
    unknown = [c for c in requested if c not in columns]
    if unknown:
        raise DataError(f"unknown column(s) {unknown} in {source}; available: {columns}")
    if len(set(requested)) != len(requested):
        dup = sorted({c for c in requested if requested.count(c) > 1})
        raise DataError(f"column(s) {dup} are used twice (id, time, value and input "
                        "columns must be distinct)")
    if value_cols is None:
        taken = set(requested)
        value_cols = [c for c in columns if c not in taken and _looks_numeric(frame[c])]
        text = [c for c in columns if c not in taken and c not in value_cols]
        if text and (id_col is None or time_col is None):
            # a text column left out without a word is how an id or a date column that
            # was not named turns a table of many sequences into one (and its dates into
            # nothing): say so, and let the value columns be named to leave it out
            raise DataError(
                f"column(s) {text} of {source} hold text, which cannot be a value: name "
                "the column of sequence ids as the id column (--id-col) and that of dates "
                "or times as the time column (--time-col), or list the value columns "
                f"(--value-cols) to leave the rest out; columns: {columns}")
        if not value_cols:
            raise DataError(f"{source} has no numeric value column besides the id, time and "
                            f"input columns; columns: {columns}")
        if time_col is None:
            timelike = [c for c in value_cols if c.strip().lower() in TIME_NAMES]
            if timelike:
                warnings.warn(f"column {timelike[0]!r} of {source} is read as a value and the "
                              "times are the row numbers; if it holds the times, name it as "
                              f"the time column (--time-col {timelike[0]})", stacklevel=3)
    if len(value_cols) == 0:
        raise DataError("value_cols is empty: name at least one feature column")
    return list(value_cols), input_cols


# names of a column that likely holds times: read as a value without --time-col, warned
TIME_NAMES = frozenset({"t", "time", "times", "timestamp", "date", "datetime", "frame",
                        "step", "year", "day", "hour", "week", "month"})


def _looks_numeric(series: pd.Series) -> bool:
    """A numeric column, or a text column with at least one number in it (so that a
    stray typo in a numeric column is reported rather than the column dropped)."""
    if _is_number_column(series) or ptypes.is_bool_dtype(series.dtype):
        return True
    if ptypes.is_datetime64_any_dtype(series.dtype) or ptypes.is_timedelta64_dtype(series.dtype):
        return False
    return bool(pd.to_numeric(series, errors="coerce").notna().any())


def _is_number_column(series: pd.Series) -> bool:
    return ptypes.is_numeric_dtype(series.dtype) and not ptypes.is_complex_dtype(series.dtype)


def _sequence_codes(frame, id_col, default_id) -> tuple[np.ndarray, list[str]]:
    """(rows,) int codes of the sequence of each row, and the ids in first-seen order."""
    if id_col is None:
        return np.zeros(frame.shape[0], dtype=np.int64), [str(default_id)]
    raw = frame[id_col]
    missing = raw.isna().to_numpy()
    if missing.any():
        row = int(np.argmax(missing))
        raise DataError(f"id column {id_col!r} has a missing value at row {row}")
    if ptypes.is_float_dtype(raw.dtype) and np.all(np.isfinite(raw) & (raw == np.round(raw))):
        raw = raw.astype(np.int64)                       # ids 1.0, 2.0 read as "1", "2"
    codes, uniques = pd.factorize(raw.astype(str), sort=False)
    return codes.astype(np.int64), [str(v) for v in uniques]


def _numeric(series: pd.Series, name: str) -> np.ndarray:
    """(rows,) float64 values of a column; NaN/None/NA become NaN."""
    if ptypes.is_bool_dtype(series.dtype) or _is_number_column(series):
        return series.to_numpy(dtype=np.float64, na_value=np.nan)
    if ptypes.is_datetime64_any_dtype(series.dtype) or ptypes.is_timedelta64_dtype(series.dtype):
        raise DataError(f"column {name!r} holds dates or durations, not numbers "
                        "(use it as time_col)")
    coerced = pd.to_numeric(series, errors="coerce")
    bad = (coerced.isna() & series.notna()).to_numpy()
    if bad.any():
        row = int(np.argmax(bad))
        raise DataError(f"column {name!r} has a non-numeric value {series.iloc[row]!r} "
                        f"at row {row}")
    return coerced.to_numpy(dtype=np.float64, na_value=np.nan)


def _parse_times(series: pd.Series, name: str, date_format: str | None = None
                 ) -> tuple[np.ndarray, str | None, str | None]:
    """(rows,) float64 times, and the origin/unit when they were parsed from dates."""
    missing = series.isna().to_numpy()
    if missing.any():
        raise DataError(f"time column {name!r} has a missing value at row "
                        f"{int(np.argmax(missing))}")
    if date_format is not None and not ptypes.is_datetime64_any_dtype(series.dtype):
        return days_since_first(parse_dates_in_format(series.astype(str), name, date_format))
    if _is_number_column(series) and not ptypes.is_bool_dtype(series.dtype):
        values = series.to_numpy(dtype=np.float64)
    elif ptypes.is_datetime64_any_dtype(series.dtype):
        return days_since_first(series)
    elif ptypes.is_timedelta64_dtype(series.dtype):          # elapsed time: float days
        return (series / pd.Timedelta(days=1)).to_numpy(dtype=np.float64), None, "days"
    else:
        numbers = pd.to_numeric(series, errors="coerce")
        if numbers.notna().all():
            values = numbers.to_numpy(dtype=np.float64)
        else:
            stamps = parse_text_dates(series, name)
            if stamps.notna().all():
                return days_since_first(stamps)
            neither = (numbers.isna() & stamps.isna()).to_numpy()
            row = int(np.argmax(neither if neither.any() else stamps.isna().to_numpy()))
            problem = ("a value that is neither a number nor a date:" if neither.any()
                       else "both numbers and dates, e.g.")
            raise DataError(f"time column {name!r} has {problem} {series.iloc[row]!r} "
                            f"at row {row}")
    if not np.isfinite(values).all():
        row = int(np.argmax(~np.isfinite(values)))
        raise DataError(f"time column {name!r} has a non-finite value {values[row]} at row {row}")
    return values, None, None


def _check_finite(values, names, codes, ids, problem, is_bad) -> None:
    bad = is_bad(values)                                                       # (rows, C)
    if bad.any():
        row, col = (int(i) for i in np.argwhere(bad)[0])
        raise DataError(f"column {names[col]!r} {problem} at row {row} "
                        f"(sequence {ids[codes[row]]!r})")


def _check_duplicate_times(t_sorted, codes_sorted, ids, frame, time_col, order) -> None:
    same = (np.diff(t_sorted) == 0) & (np.diff(codes_sorted) == 0)
    if same.any():
        k = int(np.argmax(same)) + 1
        row = int(order[k])
        shown = frame[time_col].iloc[row] if time_col is not None else t_sorted[k]
        raise DataError(f"sequence {ids[codes_sorted[k]]!r} has duplicate time {shown} "
                        f"(rows {int(order[k - 1])} and {row})")


# -------------------------------------------------------------------- arrays
def from_numpy(x, t=None, u=None, lengths=None, feature_names: list[str] | None = None,
               input_names: list[str] | None = None) -> SequenceDataset:
    """Build a dataset from dense arrays; NaN in ``x`` marks missing entries.

    Args:
        x: (N, T, D) values (rank 3 is required, also for one sequence: ``x[None]``), or
            image frames (N, T, H, W) (one channel) or (N, T, C, H, W): these are stored
            flat, D = C * H * W, with the dataset's ``frame_shape`` (C, H, W); NaN marks
            a missing pixel, an all-NaN frame a missing frame.
        t: (T,) shared or (N, T) times; default 0..T-1.
        u: optional (N, T, U) inputs.
        lengths: optional (N,) valid steps of each sequence; entries beyond are ignored.
        feature_names, input_names: default ``x0..``, ``u0..``.
    Sequence ids are "0", "1", ... .
    """
    x = _array(x, "x")
    frame_shape = None
    if x.ndim in (4, 5):                  # frames (N, T, [C,] H, W), stored flat
        frame_shape = (1, *x.shape[2:]) if x.ndim == 4 else tuple(x.shape[2:])
        x = x.reshape(*x.shape[:2], -1)
    if x.ndim != 3:
        raise DataError(f"x must have rank 3 (N, T, D), 4 (N, T, H, W) or 5 (N, T, C, H, W), "
                        f"got shape {x.shape}; for one sequence pass x[None]")
    N, T, D = x.shape
    if min(N, T, D) == 0:
        raise DataError(f"x is empty: shape {x.shape}")
    lengths = _lengths(lengths, N, T)
    t = np.tile(np.arange(T, dtype=np.float64), (N, 1)) if t is None else _array(t, "t")
    if t.ndim == 1 and t.shape == (T,):
        t = np.tile(t, (N, 1))
    if t.shape != (N, T):
        raise DataError(f"t must have shape (T,) = ({T},) or (N, T) = {(N, T)}, got {t.shape}")
    if u is not None:
        u = _array(u, "u")
        if u.ndim != 3 or u.shape[:2] != (N, T):
            raise DataError(f"u must have shape (N, T, U) with N, T = {(N, T)}, got {u.shape}")
    if feature_names is None and frame_shape is not None:
        feature_names = [f"pixel{c}_{r}_{w}" for c in range(frame_shape[0])
                         for r in range(frame_shape[1]) for w in range(frame_shape[2])]
    feature_names = _names(feature_names, D, "x", "feature_names")
    input_names = _names(input_names, 0 if u is None else u.shape[2], "u", "input_names")
    valid = np.arange(T)[None, :] < lengths[:, None]                           # (N, T)
    inf = np.isinf(x) & valid[..., None]
    if inf.any():
        n, k, d = np.argwhere(inf)[0]
        raise DataError(f"x has an inf value in feature {feature_names[d]!r} of sequence "
                        f"'{n}' at step {k}")
    sequences = [Sequence(t=t[n, :L], x=x[n, :L], u=None if u is None else u[n, :L], id=str(n))
                 for n, L in enumerate(lengths.tolist())]
    if frame_shape is not None:
        frame_shape = tuple(int(s) for s in frame_shape)
    return SequenceDataset(sequences, feature_names, input_names, frame_shape=frame_shape)


def _array(value, name: str) -> np.ndarray:
    arr = np.asarray(value)
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_) \
            or np.issubdtype(arr.dtype, np.complexfloating):
        raise DataError(f"{name} must hold real numbers, got dtype {arr.dtype}")
    return arr.astype(np.float64)


def _lengths(lengths, N: int, T: int) -> np.ndarray:
    if lengths is None:
        return np.full(N, T, dtype=np.int64)
    arr = np.asarray(lengths)
    if arr.shape != (N,) or not (np.issubdtype(arr.dtype, np.integer)
                                 or (np.issubdtype(arr.dtype, np.floating)
                                     and np.array_equal(arr, np.round(arr)))):
        raise DataError(f"lengths must be (N,) = ({N},) integers, got {arr.dtype} {arr.shape}")
    arr = arr.astype(np.int64)
    if (arr < 1).any() or (arr > T).any():
        raise DataError(f"lengths must lie in [1, T={T}], got {arr.tolist()}")
    return arr


def _names(names, count: int, prefix: str, what: str) -> list[str]:
    if names is None:
        return [f"{prefix}{i}" for i in range(count)]
    names = [str(n) for n in names]
    if len(names) != count:
        raise DataError(f"{what} has {len(names)} names for {count} columns")
    return names
