"""End to end: `dynvae train/evaluate/sample` with the gradient Trainer (tiny settings)."""

import json

import numpy as np
import pandas as pd
import pytest

from dynvae.cli import main
from dynvae.train.checkpoint import load_checkpoint

TINY_DKF = ["--set", "latent_dim=2", "--set", "encoder_hidden=8", "--set",
            "transition_hidden=8", "--set", "emission_hidden=8", "--set", "batch_size=6",
            "--set", "eval_every=2", "--set", "checkpoint_every=2", "--set", "progress=false",
            "--set", "n_predict_samples=4"]
DIGITS = ["--dataset", "healing-digits", "--dataset-option", "n_sequences=24",
          "--dataset-option", "length=4"]


def _train(out, *extra):
    return main(["train", "--model", "dkf", *DIGITS, *TINY_DKF, "--set",
                 "observation=bernoulli", "--out", str(out), *extra])


def test_train_evaluate_sample_and_resume_on_healing_digits(tmp_path, capsys):
    run = tmp_path / "run"
    assert _train(run, "--set", "max_steps=2", "--set", "kl_anneal_steps=1") == 0
    for name in ("config.json", "metrics.json", "metrics.csv", "checkpoints/model.pt",
                 "checkpoints/last.pt", "checkpoints/best.pt", "plots/training_curve.png",
                 "plots/imputation.png", "plots/forecast.png", "plots/latents.png",
                 "plots/kl_per_dim.png"):
        assert (run / name).is_file(), name
    config = json.loads((run / "config.json").read_text())
    sections = config["config"]
    assert sections["train"]["max_steps"] == 2 and sections["model"]["observation"] == "bernoulli"
    assert config["data"]["options"] == {"n_sequences": 24, "length": 4}
    metrics = json.loads((run / "metrics.json").read_text())
    for key in ("test_elbo_per_step", "test_iwae_per_step", "test_imputation_mse",
                "forecast_mse", "test_missing_mse", "test_missing_bce"):
        assert np.isfinite(metrics[key]), key
    assert metrics["latent_dims"] == 2 and 0 <= metrics["active_latent_dims"] <= 2
    curve = pd.read_csv(run / "metrics.csv")
    assert len(curve) == 2 and {"kl_per_step", "kl_dim0", "kl_dim1"} <= set(curve.columns)
    # the data-sized rule filled what --set did not give
    # (the DKF's Config names its own learning rate, dynvae.train.defaults)
    assert sections["train"]["lr"] == 1e-2 and sections["model"]["hide_from_encoder"] == 0.3
    # resume through the CLI: 2 more steps continue from checkpoints/last.pt
    capsys.readouterr()
    assert _train(run, "--set", "max_steps=4", "--set", "kl_anneal_steps=1", "--resume",
                  "--set", "progress=true") == 0
    assert f"resuming from step 2 ({run / 'checkpoints' / 'last.pt'})" in capsys.readouterr().err
    assert load_checkpoint(run / "checkpoints" / "last.pt")["step"] == 4
    assert len(pd.read_csv(run / "metrics.csv")) == 4
    assert _train(run, "--set", "max_steps=4", "--set", "kl_anneal_steps=1", "--resume",
                  "--set", "progress=true") == 0                 # nothing left: said so
    err = capsys.readouterr().err
    assert "resuming from step 4 (" in err and "max_steps is reached: nothing left" in err
    (run / "metrics.json").unlink()
    assert main(["evaluate", str(run)]) == 0
    assert "test_iwae_per_step" in json.loads((run / "metrics.json").read_text())
    assert main(["sample", str(run), "-n", "3", "--steps", "5", "--out",
                 str(tmp_path / "s.npy")]) == 0
    draws = np.load(tmp_path / "s.npy")
    assert draws.shape == (3, 5, 64) and np.isfinite(draws).all()


def test_four_chorales_vrnn(tmp_path, monkeypatch):
    monkeypatch.setenv("DYNVAE_CACHE", str(tmp_path / "cache"))
    run = tmp_path / "run"
    code = main(["train", "--model", "vrnn", "--dataset", "chorales", "--dataset-option",
                 "max_pieces=4", "--dataset-option", "progress=false", "--set",
                 "observation=bernoulli", "--set", "latent_dim=2", "--set", "hidden_size=8",
                 "--set", "feature_size=8", "--set", "mlp_hidden=8", "--set", "max_steps=1",
                 "--set", "progress=false", "--set", "n_predict_samples=2", "--out", str(run)])
    assert code == 0
    assert (run / "plots" / "piano_roll.png").is_file()
    assert list((tmp_path / "cache").glob("chorales-*.npz"))
    config = json.loads((run / "config.json").read_text())
    assert len(config["split"]["train_ids"]) == 2 and len(config["split"]["test_ids"]) == 1


@pytest.mark.parametrize("args, message", [
    (["--set", "no_such_key=1"], "unknown config key 'no_such_key'; valid keys"),
    (["--set", "max_second=5"], "(did you mean 'train.max_seconds'?)"),
    (["--set", "model.lattent_dim=5"], "(did you mean 'model.latent_dim'?)"),
    (["--set", "max_steps=many"], "expected int"),
    (["--set", "lr=-1"], "lr must be > 0"),
    (["--dataset-option", "pieces=3"], "dataset 'healing-digits' takes KEY=VALUE"),
])
def test_bad_options_are_clear_errors(tmp_path, capsys, args, message):
    code = main(["train", "--model", "dkf", *DIGITS, *args, "--out", str(tmp_path / "r")])
    assert code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    (["--max-seconds", "5"], "unrecognized arguments: --max-seconds 5; model and training "
     "settings go through --set: --set max_seconds=5"),
    (["--outt", "x"], "unrecognized arguments: --outt x; did you mean --out?"),
])
def test_unknown_options_answer_with_the_command_and_a_hint(tmp_path, capsys, args, message):
    """An unknown option is one error line naming the command (exit code 2), with the
    nearest option or the --set route for a setting written as an option."""
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--model", "dkf", *DIGITS, *args, "--out", str(tmp_path / "r")])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"dynvae train: error: {message}")
    assert not (tmp_path / "r").exists()


def test_bad_data_is_a_clear_error(tmp_path, capsys):
    # Gaussian-valued data with a Bernoulli observation model
    frame = pd.DataFrame({"id": [0, 0, 0, 1, 1, 1], "t": [0, 1, 2] * 2,
                          "a": [0.5, -3.0, 2.0, 1.0, 0.0, 4.0]})
    frame.to_csv(tmp_path / "d.csv", index=False)
    code = main(["train", "--model", "dkf", "--data", str(tmp_path / "d.csv"), "--id-col", "id",
                 "--time-col", "t", *TINY_DKF, "--set", "observation=bernoulli", "--set",
                 "max_steps=1", "--out", str(tmp_path / "r")])
    assert code == 2
    assert "needs values in [0, 1]" in capsys.readouterr().err


def test_resume_without_checkpoint_is_a_clear_error(tmp_path, capsys):
    assert _train(tmp_path / "r", "--set", "max_steps=1", "--resume") == 2
    assert "last.pt does not exist" in capsys.readouterr().err


def test_dsae_with_free_bits_reports_the_kl_of_each_dynamic_and_static_dimension(tmp_path):
    """free_bits reaches a model whose KL splits into dynamic and static dimensions: the
    run trains, metrics.csv has Z + V kl_dim columns and the collapse plot is written."""
    run = tmp_path / "run"
    assert main(["train", "--model", "dsae", *DIGITS, "--set", "latent_dim=2", "--set",
                 "static_dim=3", "--set", "hidden_size=8", "--set", "encoder_hidden=8",
                 "--set", "batch_size=6", "--set", "max_steps=3", "--set", "free_bits=0.5",
                 "--set", "kl_anneal_steps=1", "--set", "progress=false", "--set",
                 "n_predict_samples=4", "--out", str(run)]) == 0
    curve = pd.read_csv(run / "metrics.csv")
    columns = [c for c in curve.columns if c.startswith("kl_dim")]
    assert columns == [f"kl_dim{i}" for i in range(5)] and curve[columns].notna().all().all()
    np.testing.assert_allclose(curve[columns].sum(axis=1), curve["kl_per_step"], rtol=1e-6)
    assert (run / "plots" / "kl_per_dim.png").stat().st_size > 0
    assert json.loads((run / "metrics.json").read_text())["latent_dims"] == 5
