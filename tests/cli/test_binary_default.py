"""Binary data gets a Bernoulli observation model by default in `dynvae train`."""

import json

import numpy as np
import pandas as pd
import pytest

from dynvae.cli import main


@pytest.fixture
def binary_csv(tmp_path):
    rng = np.random.default_rng(0)
    rows = [{"id": f"s{i}", "t": t, "a": float(rng.random() < 0.3), "b": float(rng.random() < 0.6)}
            for i in range(12) for t in range(8)]
    path = tmp_path / "binary.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def observation_of(run):
    return json.loads((run / "config.json").read_text())["config"]["model"]["observation"]


def test_binary_data_defaults_to_bernoulli_and_an_explicit_choice_wins(binary_csv, tmp_path,
                                                                       capsys):
    base = ["train", "--model", "dkf", "--data", str(binary_csv), "--id-col", "id",
            "--time-col", "t", "--set", "max_steps=2", "--set", "progress=false"]
    assert main([*base, "--out", str(tmp_path / "auto")]) == 0
    assert "observation=bernoulli" in capsys.readouterr().out
    assert observation_of(tmp_path / "auto") == "bernoulli"
    metrics = json.loads((tmp_path / "auto" / "metrics.json").read_text())
    assert metrics["test_elbo_per_step"] < 0            # a Bernoulli bound is a log-probability
    assert main([*base, "--set", "observation=gaussian", "--out", str(tmp_path / "g")]) == 0
    assert observation_of(tmp_path / "g") == "gaussian"
