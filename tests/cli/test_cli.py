"""End-to-end CLI: the run-directory contract, every sub-command, and clear errors."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from dynvae.cli import main

pytest.importorskip("statsmodels")

RUN_FILES = ["config.json", "metrics.json", "metrics.csv", "checkpoints/model.pt",
             "plots/training_curve.png", "plots/imputation.png", "plots/forecast.png"]


@pytest.fixture(scope="module")
def nile_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "nile"
    assert main(["train", "--model", "lgssm", "--dataset", "nile", "--out", str(run)]) == 0
    return run


@pytest.fixture(scope="module")
def nile_csv(tmp_path_factory):
    from statsmodels.datasets import nile
    frame = nile.load_pandas().data.copy()
    frame.loc[[10, 11, 50], "volume"] = np.nan
    path = tmp_path_factory.mktemp("data") / "nile.csv"
    frame.to_csv(path, index=False)
    return path


def test_train_writes_the_run_directory_contract(nile_run, capsys):
    for name in RUN_FILES:
        assert (nile_run / name).is_file() and (nile_run / name).stat().st_size > 0, name
    metrics = json.loads((nile_run / "metrics.json").read_text())
    # statsmodels' local level MLE: -632.538 (kappa = 1e6 on the raw scale)
    assert abs(metrics["log_likelihood"] - (-632.538)) < 0.05
    assert metrics["train_equals_test"] == 1.0
    for key in ("log_likelihood_per_step", "test_elbo_per_step", "test_iwae_per_step",
                "test_imputation_mse", "test_imputation_nll", "forecast_mse"):
        assert np.isfinite(metrics[key]), key
    config = json.loads((nile_run / "config.json").read_text())
    assert config["model"] == "lgssm" and config["data"] == {"dataset": "nile"}
    assert config["standardizer"]["feature_names"] == ["volume"]
    curve = pd.read_csv(nile_run / "metrics.csv")
    assert {"step", "log_likelihood"} <= set(curve.columns) and len(curve) >= 1


def test_evaluate_rewrites_metrics(nile_run, tmp_path):
    run = tmp_path / "copy"
    shutil.copytree(nile_run, run)
    metrics = json.loads((run / "metrics.json").read_text())
    (run / "metrics.json").write_text(json.dumps({"fit_seconds": 1.0}))
    assert main(["evaluate", str(run)]) == 0
    again = json.loads((run / "metrics.json").read_text())
    assert again["fit_seconds"] == 1.0
    for key in ("log_likelihood", "test_imputation_mse", "forecast_mse"):
        assert again[key] == pytest.approx(metrics[key], rel=1e-9)


def test_impute_forecast_sample_write_files(nile_run, nile_csv, tmp_path, capsys):
    out = tmp_path / "imputed.csv"
    assert main(["impute", str(nile_run), "--data", str(nile_csv), "--time-col", "year",
                 "--value-cols", "volume", "--out", str(out),
                 "--plot", str(tmp_path / "imp.png")]) == 0
    frame = pd.read_csv(out)
    assert list(frame.columns) == ["id", "t", "feature", "observed", "mean", "std"]
    assert len(frame) == 100 and frame["observed"].isna().sum() == 3
    assert (frame["std"] > 0).all() and (tmp_path / "imp.png").stat().st_size > 0
    gap = frame.loc[frame["observed"].isna(), "std"].min()
    assert gap > frame.loc[frame["observed"].notna(), "std"].median() * 0.5

    out = tmp_path / "forecast.csv"
    assert main(["forecast", str(nile_run), "--data", str(nile_csv), "--time-col", "year",
                 "--value-cols", "volume", "--horizon", "5", "--out", str(out)]) == 0
    frame = pd.read_csv(out)
    assert list(frame.columns) == ["id", "step", "t", "feature", "mean", "std"]
    assert frame["t"].tolist() == [1971.0, 1972.0, 1973.0, 1974.0, 1975.0]
    assert frame["std"].is_monotonic_increasing
    # --at times are checked against each sequence, named as given, the sequence by id
    for at, words in (("1969", "not after the end of sequence"),
                      ("1971.5", "discrete-time and forecasts at t_last + k dt")):
        assert main(["forecast", str(nile_run), "--data", str(nile_csv), "--time-col",
                     "year", "--value-cols", "volume", "--at", at, "--out",
                     str(tmp_path / "at.csv")]) == 2
        err = capsys.readouterr().err.strip()
        assert f"--at {at}: " in err and words in err and len(err.splitlines()) == 1
    assert not (tmp_path / "at.csv").exists()

    for name in ("draws.csv", "draws.npy"):
        assert main(["sample", str(nile_run), "-n", "3", "--steps", "7",
                     "--out", str(tmp_path / name)]) == 0
    assert list(pd.read_csv(tmp_path / "draws.csv").columns) == ["sample", "step", "volume"]
    assert np.load(tmp_path / "draws.npy").shape == (3, 7, 1)


def test_datasets_lists_builtins(capsys):
    assert main(["datasets"]) == 0
    out = capsys.readouterr().out
    assert "nile" in out and "synthetic-lgssm" in out and "installed" in out


def test_errors_are_clear(nile_run, nile_csv, tmp_path, capsys):
    assert main(["train", "--model", "lgssm", "--dataset", "nile", "--out", str(nile_run)]) == 2
    assert "--force" in capsys.readouterr().err
    run = str(tmp_path / "r")
    assert main(["train", "--model", "lgssm", "--dataset", "nile", "--out", run,
                 "--set", "stat_dim=2"]) == 2
    err = capsys.readouterr().err
    assert "unknown config key 'stat_dim' (did you mean 'model.state_dim'?)" in err
    assert main(["train", "--model", "lgssm", "--dataset", "nile", "--out", run,
                 "--set", "zzz=2"]) == 2                      # no near key: all of them
    err = capsys.readouterr().err
    assert "zzz" in err and "model.state_dim" in err and "fit.max_iter" in err
    assert main(["train", "--model", "nope", "--dataset", "nile", "--out", run]) == 2
    assert "unknown model 'nope'" in capsys.readouterr().err
    assert main(["impute", str(nile_run), "--data", str(nile_csv), "--time-col", "year",
                 "--value-cols", "flow", "--out", str(tmp_path / "x.csv")]) == 2
    assert "flow" in capsys.readouterr().err
    broken = tmp_path / "broken"
    shutil.copytree(nile_run, broken)
    model = broken / "checkpoints" / "model.pt"
    model.write_bytes(model.read_bytes()[:100])
    assert main(["evaluate", str(broken)]) == 2
    err = capsys.readouterr().err
    assert "corrupt or truncated" in err and "model.pt" in err
    assert err.count("\n") == 1 and len(err) < 300      # one short line
    if not torch.cuda.is_available():      # a healthy run is not called corrupt
        for command in (["evaluate", str(nile_run), "--data", str(nile_csv),
                         "--out", str(tmp_path / "m.json")],
                        ["sample", str(nile_run), "-n", "2", "--steps", "3",
                         "--out", str(tmp_path / "s.npy")]):
            assert main([*command, "--device", "cuda"]) == 2
            err = capsys.readouterr().err
            assert "--device cuda was given but no CUDA device is available" in err, err


def test_train_on_a_multi_sequence_file_splits_by_sequence(tmp_path):
    rng = np.random.default_rng(0)
    rows = []
    for i in range(6):
        level = np.cumsum(rng.normal(0, 0.3, 25))
        x = level[:, None] + rng.normal(0, 0.5, (25, 2))
        x[rng.random((25, 2)) < 0.1] = np.nan
        rows.append(pd.DataFrame({"id": f"s{i}", "t": np.arange(25.0), "a": x[:, 0],
                                  "b": x[:, 1]}))
    path = tmp_path / "many.csv"
    pd.concat(rows).to_csv(path, index=False)
    run = tmp_path / "run"
    assert main(["train", "--model", "lgssm", "--data", str(path), "--id-col", "id",
                 "--time-col", "t", "--value-cols", "a,b", "--out", str(run),
                 "--set", "diagonal_cov=true", "--set", "method=em",
                 "--set", "max_iter=30"]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    config = json.loads((run / "config.json").read_text())
    assert metrics["train_equals_test"] == 0.0 and metrics["n_test_sequences"] >= 1
    assert not set(config["split"]["train_ids"]) & set(config["split"]["test_ids"])
    assert config["config"]["model"]["diagonal_cov"] is True
    assert config["config"]["fit"]["method"] == "em"


def test_impute_and_forecast_on_dated_data_write_timestamps(nile_run, nile_csv, tmp_path):
    frame = pd.read_csv(nile_csv)
    frame["date"] = pd.date_range("2001-03-01", periods=len(frame), freq="D").strftime(
        "%Y-%m-%d")
    dated = tmp_path / "dated.csv"
    frame[["date", "volume"]].to_csv(dated, index=False)
    args = ["--data", str(dated), "--time-col", "date", "--value-cols", "volume"]
    out = tmp_path / "imputed.csv"
    assert main(["impute", str(nile_run), *args, "--out", str(out),
                 "--plot", str(tmp_path / "i.png")]) == 0
    imputed = pd.read_csv(out)
    assert list(imputed.columns) == ["id", "t", "timestamp", "feature", "observed", "mean",
                                     "std"]
    assert list(pd.to_datetime(imputed["timestamp"]).dt.strftime("%Y-%m-%d")) == list(
        frame["date"])
    assert np.allclose(imputed["t"], np.arange(len(frame)))
    out = tmp_path / "forecast.csv"
    assert main(["forecast", str(nile_run), *args, "--horizon", "3", "--out", str(out),
                 "--plot", str(tmp_path / "f.png")]) == 0
    forecast = pd.read_csv(out)
    expected = pd.date_range(pd.Timestamp(frame["date"].iloc[-1]), periods=4, freq="D")[1:]
    assert list(pd.to_datetime(forecast["timestamp"])) == list(expected)
    assert (tmp_path / "i.png").stat().st_size > 0 and (tmp_path / "f.png").stat().st_size > 0


def test_train_on_bad_data_leaves_no_run_directory(nile_csv, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--model", "lgssm", "--data", str(nile_csv), "--time-col", "year",
                 "--value-cols", "flow", "--out", str(run)]) == 2
    assert "flow" in capsys.readouterr().err
    assert not run.exists()


def test_dataset_option_of_a_dataset_without_options(tmp_path, capsys):
    assert main(["train", "--model", "lgssm", "--dataset", "nile", "--dataset-option",
                 "foo=1", "--out", str(tmp_path / "r")]) == 2
    assert "dataset 'nile' takes no options" in capsys.readouterr().err


def test_impute_with_the_run_features_in_another_order_is_an_error(tmp_path, capsys):
    rng = np.random.default_rng(1)
    frame = pd.DataFrame({"t": np.arange(30.0), "a": rng.normal(size=30).cumsum(),
                          "b": rng.normal(size=30).cumsum()})
    path = tmp_path / "ab.csv"
    frame.to_csv(path, index=False)
    run = tmp_path / "run"
    assert main(["train", "--model", "lgssm", "--data", str(path), "--time-col", "t",
                 "--value-cols", "a,b", "--set", "method=em", "--set", "max_iter=3",
                 "--out", str(run)]) == 0
    capsys.readouterr()
    assert main(["impute", str(run), "--data", str(path), "--value-cols", "b,a",
                 "--out", str(tmp_path / "x.csv")]) == 2
    assert "give them in the order ['a', 'b']" in capsys.readouterr().err


def test_a_library_warning_is_one_line_without_a_source_path(capsys):
    """A warning raised under a command prints as `dynvae COMMAND: warning: ...`, without
    Python's file and line; after the command, warnings display as before."""
    import warnings

    from dynvae import cli
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = cli.one_line_warning("impute")
        warnings.warn("times are irregular", stacklevel=1)
    assert capsys.readouterr().err == "dynvae impute: warning: times are irregular\n"
    before = warnings.showwarning
    assert main(["datasets"]) == 0
    assert warnings.showwarning is before


def test_a_run_on_a_dataset_reads_its_export_without_column_options(nile_run, tmp_path,
                                                                       capsys):
    """`datasets export` then `impute --data` on a run trained with --dataset: the
    export's columns are used (and said), as if --time-col year --value-cols volume were
    given; a table without them still needs the options."""
    export = tmp_path / "nile.csv"
    assert main(["datasets", "export", "nile", str(export)]) == 0
    capsys.readouterr()
    assert main(["impute", str(nile_run), "--data", str(export),
                 "--out", str(tmp_path / "a.csv")]) == 0
    assert ("with the columns of the export of dataset 'nile': --time-col year --value-cols "
            "volume" in capsys.readouterr().err)
    assert main(["impute", str(nile_run), "--data", str(export), "--time-col", "year",
                 "--value-cols", "volume", "--out", str(tmp_path / "b.csv")]) == 0
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "a.csv"),
                                  pd.read_csv(tmp_path / "b.csv"))
    renamed = tmp_path / "renamed.csv"
    pd.read_csv(export).rename(columns={"year": "when"}).to_csv(renamed, index=False)
    assert main(["impute", str(nile_run), "--data", str(renamed),
                 "--out", str(tmp_path / "b0.csv")]) == 0      # times 0, 1, ... in row order
    assert capsys.readouterr().err.rstrip().endswith("'nile': --value-cols volume")
    assert main(["impute", str(nile_run), "--data", str(renamed), "--time-col", "when",
                 "--out", str(tmp_path / "c.csv")]) == 0       # the rest from the export
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "a.csv").drop(columns="id"),
                                  pd.read_csv(tmp_path / "c.csv").drop(columns="id"))
