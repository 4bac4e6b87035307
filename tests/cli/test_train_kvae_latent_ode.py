"""End to end: `dynvae train/evaluate/sample` for kvae and latent-ode on a tiny irregular
stochastic Lorenz with missing values (and a Bernoulli KVAE on healing digits)."""

import json
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from dynvae.cli import main
from dynvae.commands.forecast import warn_beyond_training
from dynvae.train.run import load_run

LORENZ = ["--dataset", "stochastic-lorenz", "--dataset-option", "n=10", "--dataset-option",
          "n_times=16", "--dataset-option", "drop=0.2", "--dataset-option", "missing=0.1"]
COMMON = ["--set", "batch_size=4", "--set", "max_steps=2", "--set", "eval_every=2", "--set",
          "progress=false", "--set", "n_predict_samples=4"]
TINY = {
    "kvae": ["--set", "state_dim=2", "--set", "pseudo_dim=2", "--set", "n_matrices=2",
             "--set", "dynamics_hidden=4", "--set", "encoder_hidden=8", "--set",
             "emission_hidden=8"],
    "latent-ode": ["--set", "latent_dim=2", "--set", "encoder_hidden=6", "--set",
                   "encoder_field_hidden=6", "--set", "field_hidden=8", "--set",
                   "emission_hidden=8"],
}


@pytest.mark.parametrize("name", sorted(TINY))
def test_train_evaluate_sample_on_irregular_lorenz(name, tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    assert main(["train", "--model", name, *LORENZ, *TINY[name], *COMMON, "--out",
                 str(run)]) == 0
    for file in ("config.json", "metrics.json", "metrics.csv", "checkpoints/model.pt",
                 "plots/training_curve.png", "plots/imputation.png", "plots/forecast.png",
                 "plots/latents.png"):
        assert (run / file).is_file(), file
    assert json.loads((run / "config.json").read_text())["model"] == name
    metrics = json.loads((run / "metrics.json").read_text())
    for key in ("test_elbo_per_step", "test_iwae_per_step", "test_imputation_mse",
                "forecast_mse"):
        assert np.isfinite(metrics[key]), key
    (run / "metrics.json").unlink()
    assert main(["evaluate", str(run)]) == 0
    again = json.loads((run / "metrics.json").read_text())
    for key in ("test_iwae_per_step", "test_imputation_mse", "forecast_mse", "forecast_nll"):
        assert again[key] == metrics[key], key                   # evaluate repeats train's
    # forecasts further past the end than a training example spans get one warning line
    config = json.loads((run / "config.json").read_text())
    assert 0 < config["trained_span"] < 10
    seqs = [SimpleNamespace(t=np.array([0.0, 1.0, 2.0]))]
    warn_beyond_training(config, seqs, np.array([[2.5, 2.0 + config["trained_span"]]]))
    assert capsys.readouterr().err == ""
    warn_beyond_training(config, seqs, np.array([[2.5, 3.0 + config["trained_span"]]]))
    err = capsys.readouterr().err
    assert err.startswith("dynvae forecast: warning: the forecast reaches")
    assert len(err.splitlines()) == 1
    # a continuous-time model (the latent ODE) samples on the training data's median step
    # (config.json), not on steps of 1; a discrete-time one (the KVAE) on steps
    step = json.loads((run / "config.json").read_text())["median_step"]
    assert 0 < step < 0.5
    cls = type(load_run(run).model)
    asked = []
    monkeypatch.setattr(cls, "sample", lambda self, n, t, u=None: asked.append(t) or
                        torch.zeros(n, len(t), 3, dtype=torch.float64))
    assert main(["sample", str(run), "-n", "2", "--steps", "4", "--out",
                 str(tmp_path / "s0.npy")]) == 0
    np.testing.assert_allclose(asked[0].numpy(),
                               (step if cls.continuous_time else 1.0) * np.arange(4))
    monkeypatch.undo()
    assert main(["sample", str(run), "-n", "2", "--steps", "4", "--out",
                 str(tmp_path / "s.npy")]) == 0
    draws = np.load(tmp_path / "s.npy")
    assert draws.shape == (2, 4, 3) and np.isfinite(draws).all()
    assert main(["sample", str(run), "-n", "2", "--steps", "4", "--out",
                 str(tmp_path / "s.csv")]) == 0
    table = pd.read_csv(tmp_path / "s.csv")
    if cls.continuous_time:                      # the times the draws are at
        assert list(table.columns[:3]) == ["sample", "step", "t"]
        np.testing.assert_allclose(table["t"], np.tile(step * np.arange(4), 2))
    else:
        assert list(table.columns[:2]) == ["sample", "step"] and "t" not in table


def test_bernoulli_kvae_on_healing_digits(tmp_path):
    run = tmp_path / "run"
    assert main(["train", "--model", "kvae", "--dataset", "healing-digits", "--dataset-option",
                 "n_sequences=12", "--dataset-option", "length=4", *TINY["kvae"], *COMMON,
                 "--set", "observation=bernoulli", "--out", str(run)]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert np.isfinite(metrics["test_iwae_per_step"])


def test_bad_settings_are_one_line_errors(tmp_path, capsys):
    code = main(["train", "--model", "latent-ode", *LORENZ, "--set", "dt=0.1", "--out",
                 str(tmp_path / "run")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "dt must be None" in err and len(err.splitlines()) == 1
    code = main(["train", "--model", "kvae", *LORENZ, "--set", "engine=magic", "--out",
                 str(tmp_path / "run2")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "engine" in err and len(err.splitlines()) == 1
