"""Sharded Parquet: the writer's output read back equals the in-memory reader's, its
streamed moments equal the in-memory Standardizer, and bad input is one clear error."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from dynvae.data import Standardizer, read_table
from dynvae.data import sharded as sharded_module
from dynvae.data.dataset import collate
from dynvae.data.moments import Moments, combine
from dynvae.data.shard_writer import write_shards
from dynvae.data.sharded import ShardedDataset
from dynvae.errors import DataError

from .shard_helpers import long_table

COLS = dict(id_col="pid", time_col="time", input_cols=["u"])


@pytest.fixture(params=["csv", "parquet"])
def table_file(request, tmp_path):
    path = tmp_path / f"table.{request.param}"
    frame = long_table()
    frame.to_csv(path, index=False) if request.param == "csv" else frame.to_parquet(path)
    return path


def test_round_trip_equals_the_in_memory_reader(table_file, tmp_path):
    summary = write_shards(table_file, tmp_path / "shards", shards=4, batch_rows=37, **COLS)
    assert summary.shards == 4 and summary.sequences == 40
    memory = read_table(table_file, **COLS)
    sharded = ShardedDataset(tmp_path / "shards")
    assert sharded.feature_names == memory.feature_names == ["a", "b"]
    assert sharded.input_names == ["u"] and len(sharded) == len(memory)
    by_id = {s.id: s for s in memory}
    assert sorted(sharded.ids) == sorted(by_id)
    streamed = sharded.to_memory()
    for seq in streamed:
        ref = by_id[seq.id]
        np.testing.assert_array_equal(seq.t, ref.t)
        np.testing.assert_array_equal(seq.x, ref.x)          # NaN where missing, both
        np.testing.assert_array_equal(seq.u, ref.u)
    order = [memory.ids.index(i) for i in streamed.ids]
    got = sharded.to_batch(dtype=torch.float64)
    want = collate([memory[k] for k in order], dtype=torch.float64)
    for name in ("x", "mask", "t", "lengths", "u"):
        assert (getattr(got, name) == getattr(want, name)).all(), name


@pytest.mark.parametrize("moment_rows", [1 << 18, 7])
def test_moments_equal_the_in_memory_standardizer(table_file, tmp_path, monkeypatch,
                                                  moment_rows):
    monkeypatch.setattr(sharded_module, "MOMENT_ROWS", moment_rows)  # several blocks: 7
    write_shards(table_file, tmp_path / "shards", shards=3, batch_rows=50, **COLS)
    memory = read_table(table_file, **COLS)
    sharded = ShardedDataset(tmp_path / "shards")
    stats = json.loads((tmp_path / "shards" / "stats.json").read_text())
    full = Standardizer().fit(memory)
    np.testing.assert_allclose(stats["mean"], full.mean, rtol=1e-13)
    np.testing.assert_allclose(stats["std"], full.std, rtol=1e-12)
    for part in sharded.split((0.6, 0.4), seed=3):       # any subset, from saved moments
        ref = Standardizer().fit(memory[[memory.ids.index(i) for i in part.ids]])
        fitted = part.fit_standardizer()
        np.testing.assert_allclose(fitted.mean, ref.mean, rtol=1e-13)
        np.testing.assert_allclose(fitted.std, ref.std, rtol=1e-12)
        standardised = part.with_standardizer(fitted).to_memory()
        expect = fitted.transform(part.to_memory())
        for s, r in zip(standardised, expect, strict=True):
            np.testing.assert_array_equal(s.x, r.x)


def test_ids_are_read_from_disk_in_the_order_asked(tmp_path, monkeypatch):
    monkeypatch.setattr(sharded_module, "MOMENT_ROWS", 5)      # ids read in blocks of 5
    frame = long_table()
    frame.to_csv(tmp_path / "t.csv", index=False)
    write_shards(tmp_path / "t.csv", tmp_path / "shards", shards=3, **COLS)
    data = ShardedDataset(tmp_path / "shards")
    every = data.to_memory().ids                   # from the shard files themselves
    assert data.ids == every and len(set(every)) == 40
    order = [7, 3, 31, 0, 19]
    view = data.subset(order)
    assert view.ids == [every[k] for k in order]
    picked = data.with_ids([every[k] for k in order])
    assert picked.ids == view.ids
    np.testing.assert_array_equal(picked.positions, view.positions)
    with pytest.raises(DataError, match="'nope' is not in"):
        data.with_ids([every[0], "nope"])


def test_chan_merge_keeps_float64_accuracy_on_a_large_offset():
    rng = np.random.default_rng(1)
    x = 1e9 + rng.normal(size=(20_000, 2))                  # naive sum of squares loses it
    x[rng.random(x.shape) < 0.1] = np.nan
    streamed = Moments.empty(2)
    for block in np.array_split(x, 37):
        streamed = streamed.update(block)
    centred = x - 1e9                                        # exact (Sterbenz)
    ref_mean, ref_var = 1e9 + np.nanmean(centred, axis=0), np.nanvar(centred, axis=0)
    np.testing.assert_allclose(streamed.mean, ref_mean, rtol=0, atol=1e-5)
    # float64 means at 1e9 carry ~1e-7 absolute error: the attainable variance accuracy
    np.testing.assert_allclose(streamed.m2 / streamed.count, ref_var, rtol=1e-6)
    naive = np.nanmean(x ** 2, axis=0) - np.nanmean(x, axis=0) ** 2
    assert np.abs(naive - ref_var).max() > 0.1               # what the pairwise form avoids
    pieces = [Moments.of(b) for b in np.array_split(x, 11)]
    pooled = combine(*(np.stack([getattr(p, k) for p in pieces]) for k in ("count", "mean", "m2")))
    np.testing.assert_allclose(pooled.m2 / pooled.count, ref_var, rtol=1e-6)


def test_dates_become_days_since_the_first(tmp_path):
    frame = long_table(8, inputs=False)
    frame["time"] = pd.Timestamp("2021-03-01") + pd.to_timedelta(frame["time"], unit="h")
    frame.to_parquet(tmp_path / "d.parquet")
    write_shards(tmp_path / "d.parquet", tmp_path / "s", id_col="pid", time_col="time")
    memory = read_table(tmp_path / "d.parquet", id_col="pid", time_col="time")
    sharded = ShardedDataset(tmp_path / "s")
    assert sharded.time_unit == memory.time_unit == "days"
    assert pd.Timestamp(sharded.time_origin) == pd.Timestamp(memory.time_origin)
    by_id = {s.id: s for s in memory}
    for seq in sharded.to_memory():
        np.testing.assert_allclose(seq.t, by_id[seq.id].t, rtol=0, atol=1e-9)


def test_a_typo_in_a_named_value_column_is_one_error(tmp_path):
    frame = long_table(6, inputs=False)
    frame["a"] = frame["a"].astype(object).where(frame.index != 9, "x1")
    with pytest.raises(DataError, match="cannot read"):
        _write(tmp_path, frame, value_cols=["a", "b"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.csv"]


def _write(tmp_path, frame, **kw):
    frame.to_csv(tmp_path / "bad.csv", index=False)
    return write_shards(tmp_path / "bad.csv", tmp_path / "out", batch_rows=7,
                        **{**dict(id_col="pid", time_col="time"), **kw})


@pytest.mark.parametrize("edit, message", [
    (lambda f: f.assign(time=np.where(f.index == 30, f["time"][f.index == 3].iloc[0],
                                      f["time"]), pid=np.where(f.index == 30, f["pid"][3],
                                                               f["pid"])), "duplicate time"),
    (lambda f: f.assign(a=np.where(f.index == 20, np.inf, f["a"])), "inf value at row 20"),
    (lambda f: f.assign(pid=np.where(f.index == 11, None, f["pid"])), "missing value at row 11"),
    (lambda f: f.assign(b=np.nan), "no observed value"),
    (lambda f: f.assign(a=f["a"].astype(object).where(f.index != 9, "x1")), "do not hold numbers"),
])
def test_bad_input_is_one_error_and_leaves_nothing(tmp_path, edit, message):
    frame = edit(long_table(6, inputs=False))
    with pytest.raises(DataError, match=message):
        _write(tmp_path, frame)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.csv"]


def test_existing_output_needs_force_and_force_spares_other_folders(tmp_path):
    _write(tmp_path, long_table(5, inputs=False))
    with pytest.raises(FileExistsError, match="--force"):
        _write(tmp_path, long_table(5, inputs=False))
    summary = _write(tmp_path, long_table(7, inputs=False), force=True)
    assert summary.sequences == 7 and len(ShardedDataset(tmp_path / "out")) == 7
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="no shard index"):
        write_shards(tmp_path / "bad.csv", tmp_path / "other", id_col="pid", force=True)
    assert (tmp_path / "other" / "notes.txt").read_text() == "mine"


def test_a_damaged_directory_is_one_clear_error(tmp_path):
    _write(tmp_path, long_table(6, inputs=False))
    out = tmp_path / "out"
    with pytest.raises(DataError, match="not a shard directory"):
        ShardedDataset(tmp_path)
    index = json.loads((out / "index.json").read_text())
    for wrong, message in ((5, "more sequences than its index"), (7, "disagree")):
        (out / "index.json").write_text(json.dumps({**index, "sequences": wrong}))
        with pytest.raises(DataError, match=message):
            ShardedDataset(out)
    (out / "index.json").write_text(json.dumps(index))
    (out / "shard-00000.parquet").write_bytes(b"PAR1 truncated")
    data = ShardedDataset(out)
    with pytest.raises(DataError, match="cannot read shard .*shard-00000"):
        data.to_memory()
    (out / "sequences.parquet").write_bytes(b"\x00")
    with pytest.raises(DataError, match="cannot read .*sequences.parquet"):
        data.fit_standardizer()
    with pytest.raises(DataError, match="cannot read .*sequences.parquet"):
        ShardedDataset(out)
    (out / "index.json").write_text('{"format": "dynvae-shards-2", "shards": []}')
    with pytest.raises(DataError, match="incomplete or damaged"):
        ShardedDataset(out)
    (out / "index.json").write_text('{"format": "dynvae-shards-1", "ids": ["a"]}')
    with pytest.raises(DataError, match="write it again with `dynvae data shard`"):
        ShardedDataset(out)
