"""Frame outputs of the command line: ``dynvae sample --gif/--strip`` and ``dynvae
impute/forecast --frames`` on a run trained on 8x8 frames; existing files are kept
without --force; vector data get one ConfigError line."""

import numpy as np
import pandas as pd
import pytest

from dynvae.cli import main
from dynvae.plots.video import scale_factor, tile, to_bytes

Image = pytest.importorskip("PIL.Image")

TINY = ["--set", "latent_dim=2", "--set", "encoder_hidden=8", "--set", "transition_hidden=8",
        "--set", "emission_hidden=8", "--set", "batch_size=6", "--set", "max_steps=2",
        "--set", "eval_every=2", "--set", "progress=false", "--set", "n_predict_samples=4"]


@pytest.fixture(scope="module")
def frame_run(tmp_path_factory):
    """A DKF with conv frames trained on 12 sequences of 6 frames 8x8 in [0, 1] with 20%
    of the pixels and all of frame 2 missing; the data file and the run directory."""
    root = tmp_path_factory.mktemp("frames")
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(12, 6, 8, 8))
    x[rng.uniform(size=x.shape) < 0.2] = np.nan
    x[:, 2] = np.nan
    np.save(root / "frames.npy", x)
    assert main(["train", "--model", "dkf", "--data", str(root / "frames.npy"), *TINY,
                 "--set", "frame_encoder=conv", "--set", "frame_decoder=conv",
                 "--set", "frame_channels=4,8", "--set", "frame_features=8",
                 "--out", str(root / "run")]) == 0
    return root / "frames.npy", root / "run"


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_sample_writes_a_gif_and_a_strip_of_the_drawn_frames(frame_run, tmp_path, capsys):
    _, run = frame_run
    gif, strip, npy = tmp_path / "s.gif", tmp_path / "s.png", tmp_path / "s.npy"
    assert main(["sample", str(run), "-n", "3", "--steps", "5", "--out", str(npy),
                 "--gif", str(gif), "--strip", str(strip)]) == 0
    frames = np.load(npy).reshape(3, 5, 1, 8, 8)
    s = scale_factor(8, 8)
    assert s == 8
    with Image.open(strip) as png:
        assert png.mode == "L" and png.size == (5 * 64 + 4, 3 * 64 + 2)
        np.testing.assert_array_equal(np.asarray(png), tile(to_bytes(frames))[..., 0])
        # row 1 (sample 1), column 3 (step 3): its top-left pixel
        assert np.asarray(png)[65, 3 * 65] == to_bytes(frames)[1, 3, 0, 0, 0]
    with Image.open(gif) as animation:
        assert animation.n_frames == 5 and animation.size == (3 * 64 + 2, 64)
        animation.seek(4)
        step4 = np.asarray(animation.convert("L"))
    np.testing.assert_array_equal(step4, tile(to_bytes(frames)[None, :, 4])[..., 0])


def test_frame_files_are_kept_without_force(frame_run, tmp_path, capsys):
    _, run = frame_run
    gif = tmp_path / "s.gif"
    gif.write_bytes(b"mine")
    assert main(["sample", str(run), "-n", "1", "--steps", "2", "--gif", str(gif)]) == 2
    assert "exists; give --force" in _error_line(capsys) and gif.read_bytes() == b"mine"
    assert main(["sample", str(run), "-n", "1", "--steps", "2", "--gif", str(gif),
                 "--force"]) == 0
    with Image.open(gif) as animation:
        assert animation.n_frames == 2
    assert main(["sample", str(run), "-n", "1", "--steps", "2", "--strip",
                 str(tmp_path / "s.jpg")]) == 2
    assert "must end in .png" in _error_line(capsys)
    assert main(["sample", str(run), "-n", "1", "--steps", "2"]) == 2
    assert "give --out FILE, --gif FILE or --strip FILE" in _error_line(capsys)


def test_impute_frames_keep_observed_pixels_and_match_the_csv(frame_run, tmp_path):
    data, run = frame_run
    csv, npz = tmp_path / "imputed.csv", tmp_path / "imputed.npz"
    assert main(["impute", str(run), "--data", str(data), "--out", str(csv), "--frames",
                 str(npz)]) == 0
    x = np.load(data)[:, :, None]                                     # (N, T, 1, H, W)
    with np.load(npz) as arrays:
        imputed, mean, observed = arrays["imputed"], arrays["mean"], arrays["observed"]
        assert arrays["lengths"].tolist() == [6] * 12
    assert imputed.shape == mean.shape == (12, 6, 1, 8, 8)
    seen = ~np.isnan(x)
    np.testing.assert_allclose(imputed[seen], x[seen], rtol=1e-12)
    np.testing.assert_array_equal(imputed[~seen], mean[~seen])
    np.testing.assert_array_equal(np.isnan(observed), ~seen)
    table = pd.read_csv(csv)
    # pixel (row 2, column 5) of sequence 3 is feature pixel0_2_5
    rows = table[(table["id"] == 3) & (table["feature"] == "pixel0_2_5")]
    np.testing.assert_allclose(rows["mean"].to_numpy(), mean[3, :, 0, 2, 5], rtol=1e-6)
    npy = tmp_path / "imputed.npy"
    assert main(["impute", str(run), "--data", str(data), "--out", str(csv), "--frames",
                 str(npy)]) == 0
    again = np.load(npy)                      # a new Monte Carlo run: equal where observed
    assert again.shape == imputed.shape and np.isfinite(again).all()
    np.testing.assert_array_equal(again[seen], imputed[seen])


def test_forecast_frames_match_the_csv(frame_run, tmp_path):
    data, run = frame_run
    csv, npy = tmp_path / "forecast.csv", tmp_path / "forecast.npy"
    assert main(["forecast", str(run), "--data", str(data), "--horizon", "3", "--out",
                 str(csv), "--frames", str(npy)]) == 0
    frames = np.load(npy)
    assert frames.shape == (12, 3, 1, 8, 8)
    table = pd.read_csv(csv)
    rows = table[(table["id"] == 0) & (table["feature"] == "pixel0_7_1")]
    np.testing.assert_allclose(rows["mean"].to_numpy(), frames[0, :, 0, 7, 1], rtol=1e-6)


def test_vector_data_get_one_line_for_frame_outputs(tmp_path, capsys):
    table = tmp_path / "vec.npy"
    np.save(table, np.random.default_rng(0).normal(size=(6, 4, 3)))
    run = tmp_path / "run"
    assert main(["train", "--model", "dkf", "--data", str(table), *TINY, "--out",
                 str(run)]) == 0
    capsys.readouterr()
    assert main(["sample", str(run), "-n", "2", "--steps", "3", "--gif",
                 str(tmp_path / "s.gif")]) == 2
    assert "--gif needs a run trained on image frames" in _error_line(capsys)
    assert main(["forecast", str(run), "--data", str(table), "--horizon", "2", "--out",
                 str(tmp_path / "f.csv"), "--frames", str(tmp_path / "f.npy")]) == 2
    assert "--frames needs image frames" in _error_line(capsys)
    assert not (tmp_path / "s.gif").exists() and not (tmp_path / "f.csv").exists()


def test_pixel_levels_keep_the_unit_range_and_values_beyond_it():
    frames = np.array([0.0, 0.5, 1.0, np.nan]).reshape(1, 4, 1, 1, 1)
    assert to_bytes(frames).ravel().tolist() == [0, 128, 255, 0]
    wide = np.array([-1.0, 0.0, 1.0, 3.0]).reshape(1, 4, 1, 1, 1)   # mapped over [-1, 3]
    assert to_bytes(wide).ravel().tolist() == [0, 64, 128, 255]
    with pytest.raises(Exception, match="C = 1 \\(grey\\) or 3"):
        to_bytes(np.zeros((1, 2, 2, 4, 4)))


@pytest.mark.parametrize("name, option", [("synthetic-lgssm", "n=3"),
                                          ("healing-digits", "n_sequences=4")])
def test_dataset_export_to_npz_reads_back_to_the_same_batch(name, option, tmp_path, capsys):
    import torch

    from dynvae.commands.common import load_data
    if name == "healing-digits":
        pytest.importorskip("sklearn")
    out = tmp_path / "data.npz"
    assert main(["datasets", "export", name, str(out), "--dataset-option", option]) == 0
    key, value = option.split("=")
    data = load_data({"dataset": name, "options": {key: int(value)}})
    again = load_data({"data": str(out)})
    assert again.frame_shape == data.frame_shape and again.feature_names == data.feature_names
    a, b = (d.to_batch(dtype=torch.float64) for d in (data, again))
    for field in ("x", "mask", "t", "lengths"):
        assert torch.equal(getattr(a, field), getattr(b, field)), field
    assert main(["datasets", "export", name, str(out), "--dataset-option", option]) == 2
    assert "exists" in capsys.readouterr().err


def test_frames_alone_need_no_csv(frame_run, tmp_path, capsys):
    data, run = frame_run
    npy = tmp_path / "forecast.npy"
    assert main(["forecast", str(run), "--data", str(data), "--horizon", "2", "--frames",
                 str(npy)]) == 0
    assert np.load(npy).shape == (12, 2, 1, 8, 8)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["forecast.npy"]
    capsys.readouterr()
    assert main(["impute", str(run), "--data", str(data)]) == 2
    assert "give --out CSV or --frames FILE" in _error_line(capsys)
    assert main(["forecast", str(run), "--data", str(data), "--horizon", "2", "--frames",
                 str(npy)]) == 2
    assert "exists; give --force" in _error_line(capsys)
