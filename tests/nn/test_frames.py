"""Convolutional frame encoder and decoder: shapes, receptive field, masks, and the
configuration errors of the frame models."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dynvae.data import SequenceBatch, from_numpy
from dynvae.errors import ConfigError
from dynvae.models.registry import model_class
from dynvae.nn.frames import (
    ConvBernoulliObservation,
    ConvFrameDecoder,
    ConvFrameEncoder,
    ConvGaussianObservation,
    conv_output_size,
    receptive_field,
)

CONV = dict(frame_encoder="conv", frame_decoder="conv", frame_channels=(4, 8),
            frame_features=16, n_predict_samples=4)
MODELS = ("dkf", "vrnn", "gpvae", "latent-sde")


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 13, 17), (2, 8, 8), (1, 64, 64)])
@pytest.mark.parametrize("channels", [(4,), (4, 8), (4, 8, 8)])
def test_encoder_and_decoder_shapes(shape, channels):
    C, H, W = shape
    D, U = C * H * W, 2
    if conv_output_size(min(H, W), len(channels)) < 1:
        pytest.skip("too small for this many layers")
    enc = ConvFrameEncoder(shape, U, 10, channels)
    features = torch.rand(2, 5, 2 * D + U)
    out = enc(features)
    assert out.shape == (2, 5, 10 + U) and enc.out_features == 10 + U
    torch.testing.assert_close(out[..., 10:], features[..., 2 * D:])     # u passes through
    maps = enc.convs(torch.rand(3, 2 * C, H, W))
    L = len(channels)
    assert maps.shape == (3, channels[-1], conv_output_size(H, L), conv_output_size(W, L))
    dec = ConvFrameDecoder(7, shape, 2 * C, channels)             # two maps per channel
    assert dec(torch.rand(2, 5, 7)).shape == (2, 5, 2 * D)
    assert dec(torch.rand(4, 3, 2, 7)).shape == (4, 3, 2, 2 * D)


@pytest.mark.parametrize("n_layers", [1, 2, 3])
def test_receptive_field_is_the_support_of_one_units_gradient(n_layers):
    """With positive weights and biases every ReLU is active, so the input pixels that
    reach one interior unit of the last convolution are exactly its receptive field."""
    assert receptive_field(n_layers) == 1 + 3 * (2 ** n_layers - 1)
    enc = ConvFrameEncoder((1, 64, 64), 0, 4, (2,) * n_layers)
    with torch.no_grad():
        for p in enc.convs.parameters():
            p.copy_(p.abs() + 0.01)
    image = torch.rand(1, 2, 64, 64, requires_grad=True)
    maps = enc.convs(image)
    centre = maps.shape[-1] // 2
    maps[0, 0, centre, centre].backward()
    rows, cols = (image.grad[0].abs().sum(0) > 0).nonzero(as_tuple=True)
    assert int(rows.max() - rows.min()) + 1 == enc.receptive_field
    assert int(cols.max() - cols.min()) + 1 == enc.receptive_field
    # the window of unit (i, j) starts at 2^L i - (2^L - 1) (padding 1 per layer)
    assert int(rows.min()) == 2 ** n_layers * centre - (2 ** n_layers - 1)


def test_a_frame_without_observed_pixels_gives_zero_features():
    shape, U = (1, 8, 8), 1
    enc = ConvFrameEncoder(shape, U, 6, (4, 8))
    features = torch.rand(3, 2 * 64 + U)
    features[1, :128] = 0.0                          # pixels and mask all 0: missing frame
    out = enc(features)
    assert torch.equal(out[1, :6], torch.zeros(6))
    assert bool((out[0, :6] != 0).any()) and out[1, 6] == features[1, -1]


def frame_batch(seed: int = 0) -> SequenceBatch:
    """3 sequences of 5 frames 1x8x8 in [0, 1]: ~30% of the pixels missing, frame 2 of
    sequence 0 wholly missing, sequence 2 shorter (padding)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(3, 5, 1, 8, 8, generator=g, dtype=torch.float64)
    x[torch.rand(x.shape, generator=g) < 0.3] = float("nan")
    x[0, 2] = float("nan")
    batch = SequenceBatch.from_tensor(x)
    lengths = torch.tensor([5, 5, 3])
    mask = batch.mask & (torch.arange(5)[None, :, None] < lengths[:, None, None])
    return SequenceBatch(batch.x * mask, mask, batch.t, lengths, frame_shape=(1, 8, 8))


def seeded(fn, *args, seed=3):
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return fn(*args)


@pytest.mark.parametrize("name", MODELS)
def test_masked_pixels_and_frames_change_no_term(name):
    torch.manual_seed(0)
    model = model_class(name).from_config({**CONV, "frame_shape": (1, 8, 8)}, 64).double()
    batch = frame_batch()
    garbage = torch.where(batch.mask, batch.x, 50 * torch.randn_like(batch.x))
    other = SequenceBatch(garbage, batch.mask, batch.t, batch.lengths, frame_shape=(1, 8, 8))
    for fn in (lambda b: model.elbo(b, 2)[:2], lambda b: (model.log_likelihood_bound(b, 3),),
               lambda b: model.reconstruct(b)[1:]):
        for a, b in zip(seeded(fn, batch), seeded(fn, other), strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
    # the wholly missing frame adds no likelihood term: n_obs counts observed pixels only
    assert int(model.elbo(batch).n_obs[0]) == int(batch.mask[0].sum())
    assert not bool(batch.mask[0, 2].any())


@pytest.mark.parametrize("name", MODELS)
def test_conv_needs_frames_of_the_data_size(name):
    cls = model_class(name)
    with pytest.raises(ConfigError, match="no frame shape"):
        cls.from_config({**CONV}, 64)
    with pytest.raises(ConfigError, match="has 64 pixels, the data has D=65"):
        cls.from_config({**CONV, "frame_shape": (1, 8, 8)}, 65)
    with pytest.raises(ConfigError, match="too small"):
        cls.from_config({**CONV, "frame_shape": (1, 2, 2)}, 4)
    with pytest.raises(ConfigError, match="frame_encoder"):
        cls.Config(frame_encoder="resnet")
    mlp = cls.from_config({"frame_shape": None}, 3)          # the default: vector data
    frame_modules = (ConvFrameEncoder, ConvGaussianObservation, ConvBernoulliObservation)
    assert not any(isinstance(m, frame_modules) for m in mlp.modules())


def test_adapt_config_reads_the_frame_shape_of_the_data():
    data = from_numpy(np.random.default_rng(0).uniform(size=(4, 3, 8, 8)))
    cls = model_class("dkf")
    config, chosen = cls.adapt_config(cls.Config(**CONV), data)
    assert config.frame_shape == (1, 8, 8) and chosen == {"frame_shape": [1, 8, 8]}
    given = cls.Config(**CONV, frame_shape=(1, 4, 16))
    assert cls.adapt_config(given, data) == (given, {})
    vector = from_numpy(np.zeros((2, 3, 4)))
    assert cls.adapt_config(cls.Config(), vector)[0].frame_shape is None
