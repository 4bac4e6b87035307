"""Bad input data: mixed or ambiguous dates, overflowing values, empty columns, one row."""

import json

import numpy as np
import pandas as pd
import pytest

from dynvae.cli import main
from dynvae.data import Standardizer, from_numpy, read_table
from dynvae.errors import DataError
from tests.reliability.conftest import one_line_error
from tests.reliability.table import reliability


def dated_csv(path, dates, seed=0):
    values = np.random.default_rng(seed).normal(size=len(dates)).cumsum()
    pd.DataFrame({"date": dates, "v": values}).to_csv(path, index=False)
    return path


def mixed_dates():
    """29 days from 2021-02-20: February in ISO, March as dd/mm/YYYY (days 1-20)."""
    days = pd.date_range("2021-02-20", periods=29, freq="D")
    return [d.strftime("%Y-%m-%d") if d.month == 2 else d.strftime("%d/%m/%Y") for d in days]


@reliability("data", [
    ("29 consecutive days written half ISO (2021-02-28), half dd/mm/YYYY (01/03/2021), "
     "read by read_table and by train",
     "DataError / exit 2: mixes date formats, naming rows 9, 10, ... and the first value "
     "'01/03/2021'; no run directory")])
def test_mixed_date_formats_are_refused(tmp_path, capsys):
    path = dated_csv(tmp_path / "mixed.csv", mixed_dates())
    with pytest.raises(DataError, match=r"mixes date formats: rows 9, 10, 11, 12, 13 and 15 "
                                        r"more \(e\.g\. '01/03/2021'\) do not follow "
                                        r"'%Y-%m-%d'"):
        read_table(path, time_col="date")
    out = tmp_path / "run"
    assert main(["train", "--model", "lgssm", "--data", str(path), "--time-col", "date",
                 "--out", str(out)]) == 2
    assert "mixes date formats" in one_line_error(capsys)
    assert not out.exists()


@reliability("data", [
    ("dates that read both day-first and month-first (01/03/2021 ... 12/03/2021)",
     "DataError naming the rows and both formats; --date-format / date_format= picks one, "
     "and impute reuses the format saved with the run"),
    ("--date-format that some rows do not match", "DataError naming those rows")])
def test_ambiguous_dates_need_their_format(tmp_path, capsys):
    days = pd.date_range("2021-03-01", periods=12, freq="D")
    path = dated_csv(tmp_path / "dmy.csv", list(days.strftime("%d/%m/%Y")))
    with pytest.raises(DataError, match=r"read two ways, as '%d/%m/%Y' and as '%m/%d/%Y', "
                                        r"at rows 0, 1, 3, 4, 5 and 6 more"):
        read_table(path, time_col="date")
    day_first = read_table(path, time_col="date", date_format="%d/%m/%Y")
    np.testing.assert_array_equal(day_first[0].t, np.arange(12.0))
    month_first = read_table(path, time_col="date", date_format="%m/%d/%Y")
    assert month_first.time_origin.startswith("2021-01-03") and month_first[0].t[-1] == 334
    with pytest.raises(DataError, match=r"does not match the date format '%Y-%m-%d' at rows "
                                        r"0, 1, 2, 3, 4 and 7 more"):
        read_table(path, time_col="date", date_format="%Y-%m-%d")
    run = tmp_path / "run"
    assert main(["train", "--model", "lgssm", "--data", str(path), "--time-col", "date",
                 "--out", str(run)]) == 2
    assert "--date-format" in one_line_error(capsys)
    assert main(["train", "--model", "lgssm", "--data", str(path), "--time-col", "date",
                 "--date-format", "%d/%m/%Y", "--set", "method=em", "--set", "max_iter=2",
                 "--out", str(run)]) == 0
    assert json.loads((run / "config.json").read_text())["data"]["date_format"] == "%d/%m/%Y"
    out = tmp_path / "imputed.csv"
    assert main(["impute", str(run), "--data", str(path), "--out", str(out)]) == 0
    assert list(pd.read_csv(out)["timestamp"].str[:10]) == list(days.strftime("%Y-%m-%d"))


@reliability("data", [
    ("a value column holding +1e308 and -1e308 (train, gp)",
     "DataError / exit 2 naming the column: its mean or variance overflows float64; no run "
     "directory (nothing written)"),
    ("data to impute whose values overflow the run's standardisation",
     "DataError naming the feature, sequence and time")])
def test_overflowing_values_are_refused(tmp_path, lgssm_run, capsys):
    v = np.random.default_rng(0).normal(size=40)
    v[3], v[7] = 1e308, -1e308
    path = tmp_path / "huge.csv"
    pd.DataFrame({"t": np.arange(40.0), "level": v}).to_csv(path, index=False)
    data = read_table(path, time_col="t")
    with pytest.raises(DataError, match=r"column 'level': its mean or variance overflows "
                                        r"float64 \(largest magnitude 1e\+308\)"):
        Standardizer().fit(data)
    for command in (["train", "--model", "lgssm"], ["gp"]):
        out = tmp_path / "out"
        assert main([*command, "--data", str(path), "--time-col", "t", "--out",
                     str(out)]) == 2
        assert "column 'level': its mean or variance overflows" in one_line_error(capsys)
        assert not out.exists()
    std = Standardizer(np.zeros(2), np.full(2, 1e-10), ["a", "b"])
    x = np.ones((1, 3, 2))
    x[0, 2, 1] = 1e300
    with pytest.raises(DataError, match=r"feature 'b' of sequence '0' overflows float64 "
                                        r"when standardised at t=2"):
        std.transform(from_numpy(x, feature_names=["a", "b"]))


@reliability("data", [
    ("a value column with no observed value (all cells empty)",
     "DataError / exit 2 naming the column")])
def test_an_empty_value_column_is_refused(tmp_path, capsys):
    path = tmp_path / "empty.csv"
    pd.DataFrame({"t": np.arange(10.0), "a": np.arange(10.0), "b": np.nan}).to_csv(
        path, index=False)
    with pytest.raises(DataError, match=r"value column\(s\) \['b'\] of .*empty\.csv have no "
                                        r"observed value"):
        read_table(path, time_col="t")
    np.testing.assert_array_equal(read_table(path, time_col="t", value_cols=["a"])[0].x[:, 0],
                                  np.arange(10.0))
    assert main(["train", "--model", "lgssm", "--data", str(path), "--time-col", "t",
                 "--out", str(tmp_path / "run")]) == 2
    assert "['b']" in one_line_error(capsys)


@reliability("data", [
    ("a table of one row, --model lgssm (diffuse start: nothing left to score)",
     "exit 2: no entry to fit ...; no run directory, so the corrected command runs without "
     "--force")])
def test_a_single_row_is_a_clear_error(tmp_path, capsys):
    path = tmp_path / "one.csv"
    pd.DataFrame({"t": [0.0], "v": [1.0]}).to_csv(path, index=False)
    out = tmp_path / "run"
    assert main(["train", "--model", "lgssm", "--data", str(path), "--time-col", "t",
                 "--out", str(out)]) == 2
    assert "no entry to fit" in one_line_error(capsys)
    assert not out.exists()
    pd.DataFrame({"t": [0.0, 1.0, 2.0], "v": [1.0, 1.5, 1.2]}).to_csv(path, index=False)
    assert main(["train", "--model", "lgssm", "--data", str(path), "--time-col", "t",
                 "--set", "method=em", "--set", "max_iter=2", "--out", str(out)]) == 0


@reliability("data", [
    ("LGSSM.fit_em / fit_gradient (Python API) on sequences of one step each",
     "DataError: needs a sequence with at least 2 steps (was a RuntimeError from a "
     "reshape deep in the E-step)")])
def test_lgssm_fits_refuse_data_without_a_transition():
    import torch

    from dynvae.data import SequenceBatch
    from dynvae.models.lgssm import LGSSM
    from dynvae.models.lgssm_fit import LBFGS
    one_step = SequenceBatch.from_tensor(torch.randn(3, 1, 1, dtype=torch.float64))
    model = LGSSM.local_level(1)
    with pytest.raises(DataError, match="at least 2 steps; the longest of the 3 given has 1"):
        model.fit_em(one_step, n_iter=3)
    with pytest.raises(DataError, match="at least 2 steps"):
        model.fit_gradient(one_step, LBFGS(), steps=2)
