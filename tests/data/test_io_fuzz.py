"""Property tests of the readers on random tables with NaN, inf and duplicate times.

Each table either raises one DataError naming one of its actual problems, or reads
back exactly: observed values equal the finite inputs and the mask equals ~isnan.
The expected result is computed here with plain Python, independently of the reader.
"""

import math
import re
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dynvae.data import from_numpy, read_table
from dynvae.errors import DataError

values = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.just(math.nan))
rows = st.tuples(st.sampled_from(["a", "b", "c"]), st.integers(0, 5), values, values)


def expected_sequences(table, use_id, use_time):
    """{id: (times, values)} in order of first appearance, rows sorted by time (stable)."""
    groups = {}
    for k, (sid, t, v1, v2) in enumerate(table):
        groups.setdefault(sid if use_id else "data", []).append((t, k, v1, v2))
    out = {}
    for sid, items in groups.items():
        if use_time:
            items = sorted(items, key=lambda r: r[0])
        times = [float(r[0]) if use_time else float(i) for i, r in enumerate(items)]
        out[sid] = (times, [[r[2], r[3]] for r in items])
    return out


def problems(expected, use_time):
    found = []
    for sid, (times, x) in expected.items():
        flat = [v for row in x for v in row]
        if any(math.isinf(v) for v in flat):
            found.append(r"column 'f[12]' has an inf value")
        if use_time and len(set(times)) < len(times):
            found.append(f"sequence '{sid}' has duplicate time")
        if all(math.isnan(v) for v in flat):
            found.append(f"sequence '{sid}' has no observed value")
    for d in range(2):       # a value column with no observed value in the whole table
        if all(math.isnan(row[d]) for _, x in expected.values() for row in x):
            found.append(rf"value column\(s\) \[.*'f{d + 1}'.*\] of .* have no observed value")
    return found


def check_outcome(read, expected, found):
    try:
        ds = read()
    except DataError as err:
        assert found, f"unexpected DataError: {err}"
        assert any(re.search(p, str(err)) for p in found), (str(err), found)
        return
    assert not found, f"expected one of {found}, read without error"
    assert ds.ids == list(expected)
    batch = ds.to_batch(dtype=torch.float64)
    for b, (times, x) in enumerate(expected.values()):
        x = np.array(x, dtype=np.float64)
        seq = ds[b]
        np.testing.assert_array_equal(seq.t, times)
        np.testing.assert_array_equal(seq.mask, ~np.isnan(x))
        np.testing.assert_array_equal(seq.x[seq.mask], x[~np.isnan(x)])      # exact
        L = len(times)
        assert torch.equal(batch.mask[b, :L], torch.as_tensor(~np.isnan(x)))
        assert torch.equal(batch.x[b, :L][batch.mask[b, :L]], torch.as_tensor(x[~np.isnan(x)]))


@settings(max_examples=60, deadline=None)
@given(table=st.lists(rows, min_size=1, max_size=10), use_id=st.booleans(),
       use_time=st.booleans(), fmt=st.sampled_from(["csv", "parquet"]))
def test_random_tables_read_exactly_or_fail_clearly(table, use_id, use_time, fmt):
    frame = pd.DataFrame(table, columns=["sid", "time", "f1", "f2"])
    kwargs = dict(id_col="sid" if use_id else None, time_col="time" if use_time else None,
                  value_cols=["f1", "f2"])
    expected = expected_sequences(table, use_id, use_time)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"data.{fmt}"
        if fmt == "csv":
            frame.to_csv(path, index=False)
        else:
            frame.to_parquet(path)
        check_outcome(lambda: read_table(path, **kwargs), expected, problems(expected, use_time))


@settings(max_examples=60, deadline=None)
@given(data=st.data(), n=st.integers(1, 3), T=st.integers(1, 4))
def test_random_arrays_read_exactly_or_fail_clearly(data, n, T):
    x = np.array(data.draw(st.lists(values, min_size=n * T * 2, max_size=n * T * 2)))
    x = x.reshape(n, T, 2)
    t = np.array(data.draw(st.lists(st.integers(0, 3), min_size=T, max_size=T)), dtype=float)
    found = []
    if np.isinf(x).any():
        found.append(r"x has an inf value")
    if (np.diff(t) <= 0).any():
        found.append(r"sequence '0' has (duplicate|non-increasing) time")
    found += [f"sequence '{b}' has no observed value" for b in range(n) if np.isnan(x[b]).all()]
    expected = {str(b): (list(t), x[b].tolist()) for b in range(n)}
    check_outcome(lambda: from_numpy(x, t=t), expected, found)
