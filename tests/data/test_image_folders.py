"""The reader of a folder of image files per sequence (dynvae.data.images): PNG folders
and the arrays of the same frames give the same batch; bad inputs are one DataError."""

import numpy as np
import pytest
import torch

from dynvae.cli import main
from dynvae.data import read_image_folders, read_table
from dynvae.errors import DataError

Image = pytest.importorskip("PIL.Image")


def _write(root, frames, lengths=None):
    """frames (N, T, H, W) or (N, T, H, W, 3) uint8 -> root/<n>/<k>.png, sequence n
    keeping its first lengths[n] frames."""
    for n, seq in enumerate(frames):
        folder = root / str(n)
        folder.mkdir(parents=True)
        for k in range(len(seq) if lengths is None else lengths[n]):
            # names sort in time order only as strings: 00, 01, ..., 10
            Image.fromarray(seq[k]).save(folder / f"frame{k:02d}.png")


def _batch(data):
    return data.to_batch(dtype=torch.float64)


def test_reading_png_folders_and_arrays_gives_the_same_batch(tmp_path):
    rng = np.random.default_rng(0)
    gray = rng.integers(0, 256, size=(3, 11, 6, 8), dtype=np.uint8)
    lengths = [11, 4, 7]
    _write(tmp_path / "gray", gray, lengths)
    x = gray / 255.0
    for n, L in enumerate(lengths):
        x[n, L:] = np.nan                               # padding of the shorter sequences
    np.savez(tmp_path / "gray.npz", x=x, lengths=np.array(lengths))
    a = _batch(read_table(tmp_path / "gray"))
    b = _batch(read_table(tmp_path / "gray.npz"))
    assert a.frame_shape == b.frame_shape == (1, 6, 8)
    assert a.lengths.tolist() == lengths
    for field in ("x", "mask", "t", "lengths"):
        assert torch.equal(getattr(a, field), getattr(b, field)), field
    # frame k of a sequence is its k-th file in name order, pixel (r, w) its row r, col w
    assert a.frames()[0, 10, 0, 2, 5] == gray[0, 10, 2, 5] / 255.0


def test_rgb_folders_give_three_channels_as_a_channel_first_array(tmp_path):
    rgb = np.random.default_rng(1).integers(0, 256, size=(2, 3, 5, 4, 3), dtype=np.uint8)
    _write(tmp_path / "rgb", rgb)
    np.save(tmp_path / "rgb.npy", rgb.transpose(0, 1, 4, 2, 3) / 255.0)   # (N, T, C, H, W)
    a, b = _batch(read_image_folders(tmp_path / "rgb")), _batch(read_table(tmp_path /
                                                                             "rgb.npy"))
    assert a.frame_shape == b.frame_shape == (3, 5, 4)
    assert torch.equal(a.x, b.x) and torch.equal(a.mask, b.mask)
    assert read_image_folders(tmp_path / "rgb").ids == ["0", "1"]


def test_sixteen_bit_frames_scale_to_one(tmp_path):
    folder = tmp_path / "deep" / "a"
    folder.mkdir(parents=True)
    pixels = np.array([[0, 65535], [32768, 1]], dtype=np.uint16)
    Image.fromarray(pixels).save(folder / "0.png")
    x = _batch(read_image_folders(tmp_path / "deep")).x[0, 0]
    torch.testing.assert_close(x, torch.tensor(pixels.reshape(-1) / 65535.0))


def _one_line(err: pytest.ExceptionInfo) -> str:
    message = str(err.value)
    assert "\n" not in message
    return message


def test_bad_folders_are_one_clear_line(tmp_path):
    frames = np.zeros((1, 2, 4, 4), dtype=np.uint8)
    _write(tmp_path / "mixed", frames)
    Image.fromarray(np.zeros((5, 4), dtype=np.uint8)).save(tmp_path / "mixed" / "0" / "x.png")
    with pytest.raises(DataError) as err:
        read_image_folders(tmp_path / "mixed")
    assert "x.png" in _one_line(err) and "same size" in _one_line(err)

    (tmp_path / "empty" / "0").mkdir(parents=True)
    with pytest.raises(DataError) as err:
        read_image_folders(tmp_path / "empty")
    assert "holds no image files" in _one_line(err)

    (tmp_path / "none").mkdir()
    with pytest.raises(DataError) as err:
        read_image_folders(tmp_path / "none")
    assert "it is empty" in _one_line(err)

    _write(tmp_path / "text", frames)
    (tmp_path / "text" / "0" / "notes.txt").write_text("not a frame")
    with pytest.raises(DataError) as err:
        read_image_folders(tmp_path / "text")
    assert "notes.txt" in _one_line(err) and "not an image" in _one_line(err)

    _write(tmp_path / "stray", frames)
    (tmp_path / "stray" / "readme.txt").write_text("")
    with pytest.raises(DataError) as err:
        read_image_folders(tmp_path / "stray")
    assert "readme.txt is not a folder" in _one_line(err)

    _write(tmp_path / "channels", frames)
    Image.fromarray(np.zeros((4, 4, 3), dtype=np.uint8)).save(tmp_path / "channels" / "0" /
                                                               "z.png")
    with pytest.raises(DataError) as err:
        read_image_folders(tmp_path / "channels")
    assert "z.png" in _one_line(err) and "3 channels" in _one_line(err)

    with pytest.raises(DataError) as err:
        read_image_folders(tmp_path / "mixed", time_col="t")
    assert "tables only" in _one_line(err)


def test_missing_pillow_is_one_data_error(tmp_path, monkeypatch):
    import sys
    _write(tmp_path / "f", np.zeros((1, 1, 2, 2), dtype=np.uint8))
    monkeypatch.setitem(sys.modules, "PIL", None)
    with pytest.raises(DataError, match=r"needs Pillow: pip install 'dynvae\[video\]'"):
        read_image_folders(tmp_path / "f")


def test_train_reads_a_folder_of_image_folders(tmp_path, capsys):
    frames = np.random.default_rng(2).integers(0, 256, size=(6, 4, 8, 8), dtype=np.uint8)
    _write(tmp_path / "video", frames)
    run = tmp_path / "run"
    assert main(["train", "--model", "dkf", "--data", str(tmp_path / "video"),
                 "--set", "frame_encoder=conv", "--set", "frame_decoder=conv",
                 "--set", "frame_channels=4,8", "--set", "frame_features=8",
                 "--set", "latent_dim=2", "--set", "max_steps=2", "--set", "batch_size=3",
                 "--set", "progress=false", "--set", "n_predict_samples=2",
                 "--out", str(run)]) == 0
    import json
    config = json.loads((run / "config.json").read_text())
    assert config["data_choices"]["frame_shape"] == [1, 8, 8]
    code = main(["train", "--model", "dkf", "--data", str(tmp_path / "video" / "0"),
                 "--out", str(tmp_path / "bad")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "frame00.png is not a folder" in err[0]
