"""End to end for STORN, SRNN, RVAE and DSAE: `dynvae train/evaluate/impute/forecast/
sample` on a small CSV with gaps, and with a Bernoulli observation on healing digits."""

import json

import numpy as np
import pandas as pd
import pytest

from dynvae.cli import main

TINY = ["--set", "latent_dim=2", "--set", "hidden_size=8", "--set", "encoder_hidden=8",
        "--set", "mlp_hidden=8", "--set", "batch_size=4", "--set", "max_steps=2",
        "--set", "eval_every=2", "--set", "progress=false", "--set", "n_predict_samples=4"]
MODELS = ["storn", "srnn", "rvae", "dsae"]


def write_csv(path, n=20, T=12, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        phase = rng.uniform(0, 6)
        for t in range(T):
            a, b = np.sin(0.5 * t + phase), np.cos(0.5 * t + phase) + 0.1 * rng.normal()
            rows.append({"id": f"s{i}", "t": 2.0 * t, "a": a if rng.random() > 0.15 else None,
                         "b": b})
    pd.DataFrame(rows).to_csv(path, index=False)


@pytest.mark.parametrize("model", MODELS)
def test_train_evaluate_impute_forecast_sample(model, tmp_path):
    data, run = tmp_path / "data.csv", tmp_path / "run"
    write_csv(data)
    assert main(["train", "--model", model, "--data", str(data), "--id-col", "id",
                 "--time-col", "t", *TINY, "--out", str(run)]) == 0
    for name in ("config.json", "metrics.json", "metrics.csv", "checkpoints/model.pt",
                 "plots/training_curve.png", "plots/imputation.png", "plots/forecast.png",
                 "plots/latents.png"):
        assert (run / name).is_file(), name
    metrics = json.loads((run / "metrics.json").read_text())
    for key in ("test_elbo_per_step", "test_iwae_per_step", "test_imputation_mse",
                "forecast_mse"):
        assert np.isfinite(metrics[key]), key
    (run / "metrics.json").unlink()
    assert main(["evaluate", str(run)]) == 0
    assert "test_iwae_per_step" in json.loads((run / "metrics.json").read_text())
    common = ["--data", str(data), "--id-col", "id", "--time-col", "t"]
    assert main(["impute", str(run), *common, "--out", str(tmp_path / "imp.csv"),
                 "--plot", str(tmp_path / "imp.png")]) == 0
    imputed = pd.read_csv(tmp_path / "imp.csv")
    assert len(imputed) == 20 * 12 * 2 and np.isfinite(imputed["mean"]).all()
    assert main(["forecast", str(run), *common, "--horizon", "3", "--out",
                 str(tmp_path / "fc.csv"), "--plot", str(tmp_path / "fc.png")]) == 0
    forecast = pd.read_csv(tmp_path / "fc.csv")
    assert len(forecast) == 20 * 3 * 2
    # Monte Carlo predictions repeat under the same --seed (default 0), and move with it
    for seed, same in (("0", True), ("1", False)):
        for command, name in (("impute", "imp"), ("forecast", "fc")):
            extra = ["--horizon", "3"] if command == "forecast" else []
            assert main([command, str(run), *common, *extra, "--seed", seed, "--out",
                         str(tmp_path / f"{name}2.csv"), "--force"]) == 0
            again = pd.read_csv(tmp_path / f"{name}2.csv")
            first = pd.read_csv(tmp_path / f"{name}.csv")
            assert again["mean"].equals(first["mean"]) == same, (command, seed)
    # t_last + k dt with dt = 2: the k-th step after each sequence's last time (22)
    assert sorted(forecast["t"].unique().tolist()) == [24.0, 26.0, 28.0]
    assert main(["sample", str(run), "-n", "3", "--steps", "5", "--out",
                 str(tmp_path / "s.npy")]) == 0
    draws = np.load(tmp_path / "s.npy")
    assert draws.shape == (3, 5, 2) and np.isfinite(draws).all()


def test_bernoulli_observation_on_healing_digits(tmp_path):
    run = tmp_path / "run"
    assert main(["train", "--model", "srnn", "--dataset", "healing-digits", "--dataset-option",
                 "n_sequences=12", "--dataset-option", "length=4", *TINY, "--set",
                 "observation=bernoulli", "--out", str(run)]) == 0
    config = json.loads((run / "config.json").read_text())
    assert config["config"]["model"]["observation"] == "bernoulli"
    metrics = json.loads((run / "metrics.json").read_text())
    for key in ("test_iwae_per_step", "test_missing_bce"):
        assert np.isfinite(metrics[key]), key
    assert (run / "plots" / "imputation.png").is_file()
