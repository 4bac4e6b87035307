"""``dynvae train --data FILE.npy`` on image frames with the conv frame models: the frame
shape is read from the array, recorded, and the run reloads for imputation; conv frames
on vector data are one ConfigError line (exit 2)."""

import json

import numpy as np
import pytest
import torch

from dynvae.cli import main
from dynvae.train.run import load_run

TINY = ["--set", "latent_dim=2", "--set", "encoder_hidden=8", "--set", "transition_hidden=8",
        "--set", "emission_hidden=8", "--set", "batch_size=6", "--set", "max_steps=2",
        "--set", "eval_every=2", "--set", "progress=false", "--set", "n_predict_samples=4",
        "--set", "frame_channels=4,8", "--set", "frame_features=8"]


@pytest.fixture
def frames(tmp_path):
    """12 sequences of 5 frames 8x8 in [0, 1], 20% of the pixels and frame 2 missing."""
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(12, 5, 8, 8))
    x[rng.uniform(size=x.shape) < 0.2] = np.nan
    x[:, 2] = np.nan
    np.save(tmp_path / "frames.npy", x)
    return tmp_path / "frames.npy"


def test_conv_frames_train_from_a_numpy_file(tmp_path, frames, capsys):
    run = tmp_path / "run"
    assert main(["train", "--model", "dkf", "--data", str(frames), *TINY, "--set",
                 "frame_encoder=conv", "--set", "frame_decoder=conv", "--out", str(run)]) == 0
    config = json.loads((run / "config.json").read_text())
    assert config["data_choices"]["frame_shape"] == [1, 8, 8]
    assert config["config"]["model"]["frame_shape"] == [1, 8, 8]
    assert (run / "plots" / "imputation.png").is_file()
    loaded = load_run(run)
    kinds = {type(m).__name__ for m in loaded.model.modules()}
    assert {"ConvFrameEncoder", "ConvBernoulliObservation"} <= kinds
    # conv frame models are evaluated in the float32 they train in (float64 costs ~4x),
    # and `evaluate` recomputes the metrics `train` wrote, in the same precision
    assert {p.dtype for p in loaded.model.parameters()} == {torch.float32}
    written = json.loads((run / "metrics.json").read_text())
    assert main(["evaluate", str(run), "--force"]) == 0
    again = json.loads((run / "metrics.json").read_text())
    for key in ("test_iwae_per_step", "test_imputation_mse", "forecast_mse"):
        assert again[key] == pytest.approx(written[key], rel=1e-6), key
    out = tmp_path / "imputed.csv"
    assert main(["impute", str(run), "--data", str(frames), "--out", str(out)]) == 0
    assert out.is_file()
    assert torch.isfinite(torch.as_tensor(
        np.genfromtxt(out, delimiter=",", skip_header=1, usecols=-1))).all()


def test_conv_frames_on_vector_data_is_one_config_error(tmp_path, capsys):
    table = tmp_path / "vec.npy"
    np.save(table, np.random.default_rng(0).normal(size=(6, 4, 3)))
    code = main(["train", "--model", "vrnn", "--data", str(table), "--set",
                 "frame_encoder=conv", "--set", "max_steps=1", "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "no frame shape (C, H, W)" in err[0]
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("name", ["dkf", "vrnn", "gpvae", "latent-sde", "storn", "srnn",
                                  "rvae", "dsae", "kvae", "latent-ode"])
def test_frame_keys_are_documented_in_list_keys(name):
    from dynvae.commands.config_keys import field_docs
    from dynvae.models.registry import model_class
    docs = field_docs(model_class(name).Config)
    for key in ("frame_encoder", "frame_decoder", "frame_shape", "frame_channels",
                "frame_features"):
        assert docs[key], key


def test_vector_models_are_evaluated_in_float64(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(12, 8, 3))
    np.save(tmp_path / "vectors.npy", x)
    run = tmp_path / "run"
    assert main(["train", "--model", "dkf", "--data", str(tmp_path / "vectors.npy"), *TINY[:-4],
                 "--out", str(run)]) == 0
    assert {p.dtype for p in load_run(run).model.parameters()} == {torch.float64}
