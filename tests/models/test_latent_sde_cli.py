"""End to end: `dynvae train --model latent-sde` on a tiny irregular stochastic Lorenz."""

import json

import numpy as np

from dynvae.cli import main

TINY = ["--set", "latent_dim=2", "--set", "context_dim=4", "--set", "encoder_hidden=8",
        "--set", "drift_hidden=8", "--set", "diffusion_hidden=4", "--set",
        "emission_hidden=8", "--set", "dt=0.1", "--set", "batch_size=4", "--set",
        "max_steps=2", "--set", "eval_every=2", "--set", "progress=false", "--set",
        "n_predict_samples=4"]
LORENZ = ["--dataset", "stochastic-lorenz", "--dataset-option", "n=10", "--dataset-option",
          "n_times=16", "--dataset-option", "drop=0.2", "--dataset-option", "missing=0.1"]


def test_train_latent_sde_on_irregular_lorenz(tmp_path):
    run = tmp_path / "run"
    assert main(["train", "--model", "latent-sde", *LORENZ, *TINY, "--out", str(run)]) == 0
    for name in ("config.json", "metrics.json", "checkpoints/model.pt",
                 "plots/imputation.png", "plots/forecast.png", "plots/latents.png"):
        assert (run / name).is_file(), name
    config = json.loads((run / "config.json").read_text())
    assert config["model"] == "latent-sde" and config["config"]["model"]["dt"] == 0.1
    metrics = json.loads((run / "metrics.json").read_text())
    for key in ("test_elbo_per_step", "test_iwae_per_step", "test_imputation_mse",
                "forecast_mse"):
        assert np.isfinite(metrics[key]), key
    assert main(["sample", str(run), "-n", "2", "--steps", "4", "--out",
                 str(tmp_path / "s.npy")]) == 0
    assert np.load(tmp_path / "s.npy").shape == (2, 4, 3)
