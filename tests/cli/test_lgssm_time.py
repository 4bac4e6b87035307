"""The LGSSM on irregular times from the CLI (issue: five-minute readings with multi-hour
gaps treated as equally spaced steps, noise and diffusion fitted wrongly, nothing imputed
inside the gaps): the continuous-time model is chosen, recovers the generating noise and
diffusion, imputes inside the gaps and forecasts at any time."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from dynvae.cli import main
from dynvae.train.run import load_run

STEP_H = 5 / 60                 # five-minute readings, in hours
DIFFUSION = 0.5                 # level variance per hour
NOISE = 0.3 ** 2                # observation noise variance
GAPS = [(100, 160), (300, 372), (520, 580), (700, 790)]      # rows removed (5-7.5 h)


def simulate(seed=0):
    rng = np.random.default_rng(seed)
    n = 1000
    t = np.arange(n) * STEP_H
    level = np.cumsum(rng.normal(0, np.sqrt(DIFFUSION * STEP_H), n))
    x = level + rng.normal(0, np.sqrt(NOISE), n)
    stamps = pd.Timestamp("2024-03-01") + pd.to_timedelta(t, unit="h")
    keep = np.ones(n, bool)
    for a, b in GAPS:
        keep[a:b] = False
    return pd.DataFrame({"time": stamps, "level": level, "value": x}), keep


@pytest.fixture(scope="module")
def gap_data(tmp_path_factory):
    frame, keep = simulate()
    path = tmp_path_factory.mktemp("data") / "gaps.csv"
    frame.loc[keep, ["time", "value"]].to_csv(path, index=False)
    return path, frame, keep


@pytest.fixture(scope="module")
def runs(gap_data, tmp_path_factory):
    path, _, _ = gap_data
    root = tmp_path_factory.mktemp("runs")
    for name, extra in (("auto", []), ("discrete", ["--set", "time=discrete"])):
        assert main(["train", "--model", "lgssm", "--data", str(path), "--time-col", "time",
                     "--out", str(root / name), *extra]) == 0
    return root


def test_irregular_times_choose_the_continuous_time_model(runs, gap_data, tmp_path, capsys):
    config = json.loads((runs / "auto" / "config.json").read_text())
    assert config["config"]["model"]["time"] == "continuous"
    measured = config["data_choices"]["time_irregularity"]
    assert measured["irregular"] and measured["largest_gap"] > 60
    assert type(load_run(runs / "auto").model).__name__ == "ContinuousLGSSM"
    # the same readings without gaps: regular, the discrete model stays
    _, frame, _ = gap_data
    regular = tmp_path / "regular.csv"
    frame[["time", "value"]].iloc[:300].to_csv(regular, index=False)
    capsys.readouterr()
    assert main(["train", "--model", "lgssm", "--data", str(regular), "--time-col", "time",
                 "--out", str(tmp_path / "run"), "--set", "max_iter=3"]) == 0
    assert "times are regular" in capsys.readouterr().out
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["config"]["model"]["time"] == "discrete"


def fitted_variances(run):
    """(level variance per hour, noise variance) on the data's scale."""
    loaded = load_run(run)
    scale = float(loaded.standardizer.std[0]) ** 2
    with torch.no_grad():
        q = float(loaded.model.transition_cov()[0, 0]) * scale
        r = float(loaded.model.emission_cov()[0, 0]) * scale
    return q, r


def test_continuous_time_fit_recovers_diffusion_and_noise_across_gaps(runs):
    q, r = fitted_variances(runs / "auto")
    assert q / 24 == pytest.approx(DIFFUSION, rel=0.3)       # per day -> per hour
    assert r == pytest.approx(NOISE, rel=0.2)
    # the discrete model takes a 5 h gap for one step: it explains the same readings
    # worse (its first reading after each gap is a many-sigma surprise)
    ll = {name: json.loads((runs / name / "metrics.json").read_text())["train_log_likelihood"]
          for name in ("auto", "discrete")}
    assert ll["auto"] > ll["discrete"] + 10, ll


def test_impute_fills_the_gaps_better_than_linear_interpolation(runs, gap_data, tmp_path,
                                                                capsys):
    _, frame, keep = gap_data
    out = tmp_path / "imputed.csv"
    capsys.readouterr()
    assert main(["impute", str(runs / "auto"), "--data", str(gap_data[0]), "--out", str(out),
                 "--plot", str(tmp_path / "imputed.png")]) == 0
    text = capsys.readouterr().out
    assert "imputing on the grid" in text
    added = int((~keep).sum())
    assert f"{added} missing entries imputed, {added} of them at {added} added times" in text
    table = pd.read_csv(out, parse_dates=["timestamp"])
    new = table[table["added"] == 1].set_index("timestamp").sort_index()
    truth = frame.set_index("time").reindex(new.index, method="nearest",
                                             tolerance=pd.Timedelta("1s"))
    err = (new["mean"] - truth["level"]).to_numpy()
    seen = frame[keep]
    linear = np.interp(new.index.astype("int64"), seen["time"].astype("int64"), seen["value"])
    rmse = lambda e: float(np.sqrt(np.mean(np.square(e))))
    assert rmse(err) < rmse(linear - truth["level"].to_numpy())
    # the predictive of a reading at those times covers the hidden readings
    inside = np.abs(new["mean"] - truth["value"]) <= 2 * new["std"]
    assert 0.85 < inside.mean() <= 1.0
    # std grows from the gap's ends to its middle
    gap = new.iloc[:60]["std"].to_numpy()
    assert gap[30] > 1.5 * gap[0]
    none = tmp_path / "none.csv"
    assert main(["impute", str(runs / "auto"), "--data", str(gap_data[0]), "--out", str(none),
                 "--grid", "none"]) == 0
    assert "0 missing entries imputed" in capsys.readouterr().out
    at = tmp_path / "at.csv"
    assert main(["impute", str(runs / "auto"), "--data", str(gap_data[0]), "--out", str(at),
                 "--at", "2024-03-01 10:02:30,2024-03-01 10:31:00"]) == 0
    rows = pd.read_csv(at)
    assert rows["added"].sum() == 2
    # a time outside every sequence's span is named, never dropped silently
    capsys.readouterr()
    assert main(["impute", str(runs / "auto"), "--data", str(gap_data[0]), "--out", str(at),
                 "--force", "--at", "2024-03-01 10:02:30,2030-01-01 00:00:00"]) == 0
    err = capsys.readouterr().err
    assert "dynvae impute: warning: --at" in err
    assert "not strictly inside any sequence's span" in err
    assert pd.read_csv(at)["added"].sum() == 1
    code = main(["impute", str(runs / "auto"), "--data", str(gap_data[0]), "--out",
                 str(tmp_path / "never.csv"), "--at", "2030-01-01 00:00:00"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "dynvae forecast --at" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "never.csv").exists()


def test_forecast_at_any_time_and_grid_errors_of_the_discrete_model(runs, gap_data, tmp_path,
                                                                     capsys):
    out = tmp_path / "forecast.csv"
    assert main(["forecast", str(runs / "auto"), "--data", str(gap_data[0]), "--out", str(out),
                 "--at", "2024-03-04 11:17:00,2024-03-05 02:00:00"]) == 0
    table = pd.read_csv(out)
    assert len(table) == 2 and table["std"].iloc[1] > 2 * table["std"].iloc[0]
    capsys.readouterr()
    out = tmp_path / "refused.csv"
    code = main(["forecast", str(runs / "discrete"), "--data", str(gap_data[0]),
                 "--out", str(out), "--at", "2024-03-04 11:22:30"])
    err = capsys.readouterr().err
    assert code == 2 and "discrete-time" in err
    assert "ends at 2024-03-04 " in err                      # the data's own dates
    code = main(["forecast", str(runs / "auto"), "--data", str(gap_data[0]),
                 "--out", str(out), "--at", "2024-03-01 00:00:00"])
    err = capsys.readouterr().err
    assert code == 2 and "(its last time is 2024-03-04 " in err
    code = main(["impute", str(runs / "discrete"), "--data", str(gap_data[0]),
                 "--out", str(out), "--grid", "auto"])
    assert code == 2 and "continuous-time model" in capsys.readouterr().err
    assert not out.exists()
