"""Readers: round trips of every format and one clear DataError per kind of bad input."""

import warnings

import numpy as np
import pandas as pd
import pytest

from dynvae.data import from_dataframe, from_numpy, read_csv, read_parquet, read_table
from dynvae.errors import DataError


def long_frame():
    """Two sequences, rows shuffled in time, NaN in places, one input column."""
    return pd.DataFrame({
        "sid": ["b", "a", "b", "a", "a", "b"],
        "time": [2.5, 0.0, 0.5, 1.0, 3.0, 1.0],
        "f1": [1.0, np.nan, 3.0, 4.25, 5.0, np.nan],
        "f2": [-1.0, 2.0, np.nan, 0.1, 1e-300, 7.0],
        "ctrl": [0.0, 1.0, 0.0, 1.0, 1.0, 0.5],
    })


def assert_sequence(seq, sid, t, x, u=None):
    assert seq.id == sid
    np.testing.assert_array_equal(seq.t, t)
    np.testing.assert_array_equal(seq.x, x)          # NaN positions equal too
    if u is None:
        assert seq.u is None
    else:
        np.testing.assert_array_equal(seq.u, u)


def check_long(ds):
    assert ds.feature_names == ["f1", "f2"] and ds.input_names == ["ctrl"]
    assert ds.ids == ["b", "a"]                      # order of first appearance
    assert_sequence(ds[0], "b", [0.5, 1.0, 2.5], [[3.0, np.nan], [np.nan, 7.0], [1.0, -1.0]],
                    [[0.0], [0.5], [0.0]])
    assert_sequence(ds[1], "a", [0.0, 1.0, 3.0], [[np.nan, 2.0], [4.25, 0.1], [5.0, 1e-300]],
                    [[1.0], [1.0], [1.0]])


@pytest.mark.parametrize("suffix", [".csv", ".csv.gz", ".parquet", ".pq"])
def test_long_format_round_trip(tmp_path, suffix):
    path = tmp_path / f"data{suffix}"
    frame = long_frame()
    if ".csv" in suffix:
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path)
    ds = read_table(path, id_col="sid", time_col="time", value_cols=["f1", "f2"],
                    input_cols=["ctrl"])
    check_long(ds)
    reader = read_csv if ".csv" in suffix else read_parquet
    check_long(reader(path, id_col="sid", time_col="time", value_cols=["f1", "f2"],
                      input_cols=["ctrl"]))


def test_value_cols_default_to_remaining_numeric_columns(tmp_path):
    frame = long_frame().assign(note=["x"] * 6)
    frame.to_csv(tmp_path / "d.csv", index=False)
    ds = read_table(tmp_path / "d.csv", id_col="sid", time_col="time", input_cols="ctrl")
    check_long(ds)


def test_wide_format_is_one_sequence_in_row_order(tmp_path):
    path = tmp_path / "wide.csv"
    path.write_text("a,b\n1.5,\n,2\n3,4\n")
    ds = read_table(path)
    assert len(ds) == 1 and ds.ids == ["wide"] and ds.feature_names == ["a", "b"]
    assert_sequence(ds[0], "wide", [0.0, 1.0, 2.0], [[1.5, np.nan], [np.nan, 2.0], [3.0, 4.0]])


def test_long_format_without_time_column_counts_rows_per_id():
    frame = pd.DataFrame({"id": [1, 2, 1, 1], "v": [1.0, 2.0, 3.0, 4.0]})
    ds = from_dataframe(frame, id_col="id")
    assert ds.ids == ["1", "2"]
    assert_sequence(ds[0], "1", [0.0, 1.0, 2.0], [[1.0], [3.0], [4.0]])
    assert_sequence(ds[1], "2", [0.0], [[2.0]])


def test_csv_ids_are_read_as_text(tmp_path):
    path = tmp_path / "ids.csv"
    path.write_text("id,v\n007,1\n7,2\n")
    assert read_csv(path, id_col="id").ids == ["007", "7"]


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_datetime_times_become_days_since_first_timestamp(tmp_path, fmt):
    stamps = pd.to_datetime(["2021-03-02 12:00", "2021-03-01", "2021-03-05 06:00",
                             "2021-03-01 18:00"], format="ISO8601")
    frame = pd.DataFrame({"id": ["p", "p", "p", "q"], "when": stamps, "v": [1.0, 2.0, 3.0, 4.0]})
    path = tmp_path / f"dates.{fmt}"
    frame.to_csv(path, index=False) if fmt == "csv" else frame.to_parquet(path)
    ds = read_table(path, id_col="id", time_col="when")
    assert ds.time_unit == "days" and pd.Timestamp(ds.time_origin) == pd.Timestamp("2021-03-01")
    assert_sequence(ds[0], "p", [0.0, 1.5, 4.25], [[2.0], [1.0], [3.0]])
    assert_sequence(ds[1], "q", [0.75], [[4.0]])
    back = ds.to_timestamps(ds[0].t)
    np.testing.assert_array_equal(back, stamps[[1, 0, 2]].to_numpy())


def test_time_zone_aware_dates_map_back_in_utc():
    text = ["2021-03-28 00:30+01:00", "2021-03-28 03:30+02:00"]      # across a DST change
    stamps = pd.to_datetime(text, utc=True).tz_convert("Europe/Berlin")
    for column in (stamps, text):
        ds = from_dataframe(pd.DataFrame({"t": column, "v": [1.0, 2.0]}), time_col="t")
        np.testing.assert_allclose(ds[0].t, [0.0, 2.0 / 24.0], rtol=0, atol=1e-15)
        utc = ds.to_timestamps(ds[0].t)
        assert utc[1] == np.datetime64("2021-03-28T01:30")


def test_durations_become_days():
    frame = pd.DataFrame({"t": pd.to_timedelta(["0h", "36h", "3D"]), "v": [1.0, 2.0, 3.0]})
    ds = from_dataframe(frame, time_col="t")
    np.testing.assert_array_equal(ds[0].t, [0.0, 1.5, 3.0])
    assert ds.time_unit == "days" and ds.time_origin is None


def test_mixed_date_formats_are_parsed(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text("t,v\n2020-01-01,1\n2020-01-02 12:00,2\n")
    np.testing.assert_array_equal(read_table(path, time_col="t")[0].t, [0.0, 1.5])


def test_numpy_round_trips(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 5, 2))
    x[0, 1, 0] = np.nan
    t = np.cumsum(rng.uniform(0.1, 1.0, (3, 5)), axis=1)
    u = rng.standard_normal((3, 5, 1))
    lengths = np.array([5, 2, 4])
    np.save(tmp_path / "x.npy", x)
    ds = read_table(tmp_path / "x.npy")
    assert ds.ids == ["0", "1", "2"] and ds.feature_names == ["x0", "x1"]
    np.testing.assert_array_equal(ds[0].x, x[0])
    np.testing.assert_array_equal(ds[2].t, np.arange(5.0))
    np.savez(tmp_path / "all.npz", x=x, t=t, u=u, lengths=lengths,
             feature_names=np.array(["a", "b"]))
    ds = read_table(tmp_path / "all.npz")
    assert ds.feature_names == ["a", "b"] and ds.input_names == ["u0"]
    for n, L in enumerate(lengths):
        assert_sequence(ds[n], str(n), t[n, :L], x[n, :L], u[n, :L])


def test_from_numpy_shared_times_and_lengths_ignore_padding_values():
    x = np.ones((2, 3, 1))
    x[1, 2] = np.inf                                  # beyond length: ignored
    ds = from_numpy(x, t=[0.0, 0.5, 2.0], lengths=[3, 2])
    assert_sequence(ds[1], "1", [0.0, 0.5], [[1.0], [1.0]])


# ------------------------------------------------------------------- errors
def write_csv(tmp_path, text, name="d.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize("text, kwargs, match", [
    ("id,t,v\na,1,1\na,1,2\n", dict(id_col="id", time_col="t"),
     r"sequence 'a' has duplicate time 1 \(rows 0 and 1; lines 2 and 3 of d.csv\)"),
    ("id,t,v\na,2021-01-01,1\nb,2021-01-01,1\nb,2021-01-01,2\n", dict(id_col="id", time_col="t"),
     r"sequence 'b' has duplicate time 2021-01-01"),
    ("id,t,v\na,0,1\nb,0,inf\n", dict(id_col="id", time_col="t"),
     r"column 'v' has an inf value at row 1 \(line 3 of d.csv\) \(sequence 'b'\)"),
    ("id,t,v\na,0,1\nb,0,\nb,1,\n", dict(id_col="id", time_col="t"),
     r"sequence 'b' has no observed value"),
    ("id,t,v\na,0,1\n", dict(id_col="id", time_col="time", value_cols=["v", "w"]),
     r"unknown column\(s\) \['time', 'w'\] .*available: \['id', 't', 'v'\]"),
    ("id,t,v\na,0,1\na,1,1.2.3\n", dict(id_col="id"),
     r"column 'v' has a non-numeric value '1.2.3' at row 1 \(line 3 of d.csv\)"),
    ("t,v\n0,1\nyesterday,2\n", dict(time_col="t"),
     r"time column 't' has a value that is neither a number nor a date: 'yesterday'"),
    ("t,v\n0,1\n,2\n", dict(time_col="t"), r"time column 't' has a missing value at row 1"),
    ("t,v\n2020-01-01,1\n5,2\n", dict(time_col="t"),
     r"time column 't' has both numbers and dates, e.g. '5' at row 1"),
    ("id,v\na,1\n,2\n", dict(id_col="id"), r"id column 'id' has a missing value at row 1"),
    ("t,v,u\n0,1,1\n1,1,\n", dict(time_col="t", input_cols=["u"]),
     r"column 'u' \(an input\) has a missing or inf value at row 1"),
    ("t,v\n0,1\n1,2\n", dict(time_col="t", value_cols=["v", "t"]), r"used twice"),
    ("t,name\n0,x\n", dict(time_col="t"), r"column\(s\) \['name'\] of .* hold text"),
    ("id,t\na,0\n", dict(id_col="id", time_col="t"), r"no numeric value column"),
    ("a,b\n", {}, r"is empty: 0 rows"),
    ("", {}, r"is empty: no header and no rows"),
])
def test_csv_errors(tmp_path, text, kwargs, match):
    with pytest.raises(DataError, match=match):
        read_table(write_csv(tmp_path, text), **kwargs)


def test_missing_value_markers_are_missing_and_other_text_an_error(tmp_path):
    """The markers pandas reads as missing (NA, n/a, null, None, ...) are missing values,
    as README says; any other text is an error naming the file's line."""
    markers = ["NA", "N/A", "n/a", "NULL", "null", "None", "#N/A", "nan", ""]
    rows = "".join(f"{k},{m}\n" for k, m in enumerate(markers, start=1))
    data = read_table(write_csv(tmp_path, "t,v\n0,1.5\n" + rows), time_col="t")
    x = data.sequences[0].x[:, 0]
    assert x[0] == 1.5 and np.isnan(x[1:]).all() and len(x) == len(markers) + 1
    with pytest.raises(DataError, match=r"'missing' at row 2 \(line 4 of d.csv\)"):
        read_table(write_csv(tmp_path, "t,v\n0,1\n1,NA\n2,missing\n"), time_col="t")


def test_a_line_with_too_few_fields_is_an_error_not_missing_values(tmp_path):
    """A short line used to read as NaN in its last columns; an empty field is the way to
    write a missing value (and a blank line is skipped)."""
    with pytest.raises(DataError, match=r"line 4 of d.csv has 2 fields where the header "
                                        r"has 3; write a missing value as an empty field "
                                        r"\(e.g. 2,1.0,\)"):
        read_table(write_csv(tmp_path, "t,y,z\n0,1,2\n1,1,2\n2,1.0\n"), time_col="t")
    data = read_table(write_csv(tmp_path, "t,y,z\n0,1,2\n\n1, NA,\n"), time_col="t")
    assert np.isnan(data.sequences[0].x[1]).all() and len(data.sequences[0]) == 2


def test_parquet_errors(tmp_path):
    path = tmp_path / "d.parquet"
    pd.DataFrame({"t": [0.0, 1.0], "v": ["1", "oops"]}).to_parquet(path)
    with pytest.raises(DataError, match=r"column 'v' has a non-numeric value 'oops' at row 1"):
        read_table(path, time_col="t")
    (tmp_path / "bad.pq").write_bytes(b"not parquet")
    with pytest.raises(DataError, match=r"cannot read Parquet file"):
        read_table(tmp_path / "bad.pq")


def test_file_errors(tmp_path):
    with pytest.raises(DataError, match=r"file not found: .*nope.csv"):
        read_table(tmp_path / "nope.csv")
    with pytest.raises(DataError, match=r"not a file"):
        read_csv(tmp_path)
    with pytest.raises(DataError, match=r"unknown file suffix '.xlsx'.*known: \['.csv'"):
        read_table(write_csv(tmp_path, "a\n1\n", "d.xlsx"))
    with pytest.raises(DataError, match=r"unknown file suffix '\(none\)'"):
        read_table(write_csv(tmp_path, "a\n1\n", "noext"))


def test_numpy_file_errors(tmp_path):
    np.savez(tmp_path / "a.npz", values=np.ones((1, 2, 1)))
    with pytest.raises(DataError, match=r"must hold an array 'x'.*found \['values'\]"):
        read_table(tmp_path / "a.npz")
    np.save(tmp_path / "b.npy", np.ones((1, 2, 1)))
    with pytest.raises(DataError, match=r"\['time_col'\] apply to tables only"):
        read_table(tmp_path / "b.npy", time_col="t")
    np.save(tmp_path / "c.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match=r"cannot read NumPy file"):
        read_table(tmp_path / "c.npy")


@pytest.mark.parametrize("kwargs, match", [
    (dict(x=np.ones((4, 2))), r"x must have rank 3 \(N, T, D\), 4 \(N, T, H, W\) or 5 "
     r"\(N, T, C, H, W\), got shape \(4, 2\)"),
    (dict(x=np.ones((1, 0, 2))), r"x is empty"),
    (dict(x=np.array([[["a"]]])), r"x must hold real numbers"),
    (dict(x=np.ones((2, 3, 1)), t=np.ones(4)), r"t must have shape \(T,\) = \(3,\)"),
    (dict(x=np.ones((2, 3, 1)), u=np.ones((2, 3))), r"u must have shape \(N, T, U\)"),
    (dict(x=np.ones((2, 3, 1)), lengths=[3, 0]), r"lengths must lie in \[1, T=3\]"),
    (dict(x=np.ones((2, 3, 1)), lengths=[1.5, 2]), r"lengths must be \(N,\) = \(2,\) integers"),
    (dict(x=np.ones((2, 3, 1)), t=[0.0, 2.0, 2.0]),
     r"sequence '0' has duplicate time 2 \(after 2\)"),
    (dict(x=np.ones((2, 3, 1)), t=[[0.0, 1.0, 2.0], [0.0, 3.0, 1.0]]),
     r"sequence '1' has non-increasing time 1 \(after 3\)"),
    (dict(x=np.ones((2, 3, 1)), t=[0.0, np.nan, 2.0]), r"sequence '0' has a non-finite time"),
    (dict(x=np.array([[[1.0], [np.inf]]])), r"inf value in feature 'x0' of sequence '0' at step 1"),
    (dict(x=np.array([[[1.0]], [[np.nan]]])), r"sequence '1' has no observed value"),
    (dict(x=np.ones((1, 2, 1)), u=np.array([[[0.0], [np.nan]]])),
     r"inputs of sequence '0' must be finite at every step; t=1"),
    (dict(x=np.ones((1, 2, 2)), feature_names=["a"]), r"feature_names has 1 names for 2"),
])
def test_from_numpy_errors(kwargs, match):
    with pytest.raises(DataError, match=match):
        from_numpy(**kwargs)


def test_a_text_column_left_over_is_an_error_unless_id_and_time_are_named(tmp_path):
    """An exported table read back without column options: the text id column would
    be dropped and every row read as one sequence; it is one error naming the column
    and the options. A numeric column named like a time read as a value is warned of."""
    path = tmp_path / "export.csv"
    path.write_text("id,frame,lpc0\na,0,1.5\na,1,1.2\nb,0,0.3\nb,1,0.1\n")
    with pytest.raises(DataError, match=r"column\(s\) \['id'\] of .*export.csv hold text.*"
                                        r"--id-col.*--time-col.*--value-cols"):
        read_table(path)
    with pytest.warns(UserWarning, match=r"column 'frame' .* is read as a value.*--time-col frame"):
        ds = read_table(path, id_col="id")
    assert ds.feature_names == ["frame", "lpc0"] and len(ds) == 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds = read_table(path, id_col="id", time_col="frame")
    assert ds.feature_names == ["lpc0"] and ds.ids == ["a", "b"]
    assert read_table(path, value_cols=["lpc0"]).feature_names == ["lpc0"]   # named: fine
