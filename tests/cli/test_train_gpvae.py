"""End to end: `dynvae train --model gpvae` writes a complete run directory."""

import json

import numpy as np

from dynvae.cli import main

TINY = ["--set", "latent_dim=2", "--set", "encoder_hidden=8", "--set", "emission_hidden=8",
        "--set", "batch_size=6", "--set", "max_steps=2", "--set", "eval_every=2",
        "--set", "progress=false", "--set", "n_predict_samples=4"]


def test_train_gpvae_on_healing_digits(tmp_path):
    run = tmp_path / "run"
    code = main(["train", "--model", "gpvae", "--dataset", "healing-digits",
                 "--dataset-option", "n_sequences=24", "--dataset-option", "length=4",
                 *TINY, "--set", "observation=bernoulli", "--out", str(run)])
    assert code == 0
    for name in ("config.json", "metrics.json", "metrics.csv", "checkpoints/model.pt",
                 "plots/training_curve.png", "plots/imputation.png", "plots/forecast.png",
                 "plots/latents.png"):
        assert (run / name).is_file(), name
    config = json.loads((run / "config.json").read_text())
    assert config["model"] == "gpvae"
    assert config["config"]["model"]["kernel"] == "matern32"
    metrics = json.loads((run / "metrics.json").read_text())
    for key in ("test_elbo_per_step", "test_iwae_per_step", "test_imputation_mse",
                "forecast_mse", "test_missing_mse", "test_missing_bce"):
        assert np.isfinite(metrics[key]), key
    assert metrics["test_iwae_per_step"] >= metrics["test_elbo_per_step"] - 1.0
    assert main(["sample", str(run), "-n", "2", "--steps", "3", "--out",
                 str(tmp_path / "s.npy")]) == 0
    assert np.load(tmp_path / "s.npy").shape == (2, 3, 64)


def test_train_gpvae_on_synthetic_lgssm(tmp_path):
    run = tmp_path / "run"
    code = main(["train", "--model", "gpvae", "--dataset", "synthetic-lgssm",
                 "--dataset-option", "n=12", "--dataset-option", "T=30", *TINY,
                 "--set", "kernel=matern52", "--out", str(run)])
    assert code == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert np.isfinite(metrics["test_iwae_per_step"])
