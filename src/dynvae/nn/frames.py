"""Convolutional encoder and decoder of image frames stored flat (D = C * H * W, C-major;
see :class:`dynvae.data.batch.SequenceBatch`), and the observation models built on the
decoder.

The encoder reads a step's observation features [x * mask, mask, u] (what every model's
encoder reads, ``dynvae.models.common.observation_features``): the masked frame and its
mask become 2C image channels, so a missing pixel reaches it only through the mask
channel. A stack of stride-2 convolutions (kernel 4, padding 1: each halves H and W, as
in the DCGAN discriminator of Radford et al. 2016) ends in a linear map to a feature
vector, to which the inputs u are appended; a frame without any observed pixel gives a
zero feature vector. The decoder mirrors it: a linear map to a
(channels, ceil(H / 2^L), ceil(W / 2^L)) grid, then transposed convolutions (kernel 4,
stride 2, padding 1), each doubling H and W, cropped to (H, W).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.nn.functional import softplus

from dynvae.errors import ConfigError
from dynvae.nn.observation import BernoulliObservation, GaussianObservation, ObservationModel

KERNEL, STRIDE, PADDING = 4, 2, 1


def receptive_field(n_layers: int) -> int:
    """Side of the input window one unit of the last convolution of the encoder sees:
    r_l = r_{l-1} + (kernel - 1) * stride^(l-1), r_0 = 1, so r_L = 1 + 3 (2^L - 1)
    (10 pixels for 2 layers, 22 for 3, 46 for 4). The linear map after the stack sees
    the whole frame."""
    return 1 + (KERNEL - 1) * (STRIDE ** n_layers - 1) // (STRIDE - 1)


def conv_output_size(size: int, n_layers: int) -> int:
    """Side after ``n_layers`` stride-2 convolutions: floor((s + 2p - k) / 2) + 1 each."""
    for _ in range(n_layers):
        size = (size + 2 * PADDING - KERNEL) // STRIDE + 1
    return size


def _check(frame_shape: Sequence[int], channels: Sequence[int]) -> tuple[int, int, int]:
    if frame_shape is None or len(frame_shape) != 3:
        raise ConfigError(f"a convolutional frame model needs a frame shape (C, H, W), got "
                          f"{frame_shape}")
    C, H, W = (int(s) for s in frame_shape)
    if not channels or any(int(c) < 1 for c in channels):
        raise ConfigError(f"frame_channels must be positive integers, got {tuple(channels)}")
    side = min(H, W)
    if conv_output_size(side, len(channels)) < 1:
        raise ConfigError(f"frames of {H}x{W} pixels are too small for {len(channels)} "
                          f"stride-2 convolutions; use fewer frame_channels")
    return C, H, W


class ConvFrameEncoder(nn.Module):
    """Observation features (…, 2D + U) = [x * mask, mask, u] -> (…, F + U): a frame
    feature vector of size F = ``feature_size`` (ReLU) with u appended. ``channels``:
    output channels of each stride-2 convolution; ``receptive_field`` the window side
    one unit of the last one sees."""

    def __init__(self, frame_shape: Sequence[int], input_dim: int, feature_size: int,
                 channels: Sequence[int] = (32, 64, 64)) -> None:
        super().__init__()
        C, H, W = self.frame_shape = _check(frame_shape, channels)
        self.input_dim, self.out_features = input_dim, feature_size + input_dim
        layers: list[nn.Module] = []
        for c_in, c_out in zip([2 * C, *channels[:-1]], channels, strict=True):
            layers += [nn.Conv2d(c_in, c_out, KERNEL, STRIDE, PADDING), nn.ReLU()]
        self.convs = nn.Sequential(*layers)
        L = len(channels)
        self.receptive_field = receptive_field(L)
        flat = channels[-1] * conv_output_size(H, L) * conv_output_size(W, L)
        self.linear = nn.Sequential(nn.Linear(flat, feature_size), nn.ReLU())

    def forward(self, features: Tensor) -> Tensor:
        C, H, W = self.frame_shape
        D = C * H * W
        lead = features.shape[:-1]
        images = features[..., :2 * D].reshape(-1, 2 * C, H, W)              # (N, 2C, H, W)
        h = self.linear(self.convs(images).flatten(1)).reshape(*lead, -1)     # (…, F)
        # a frame with no observed pixel (missing, or padding) gives features 0, as the
        # zero-filled [x * mask, mask] of the MLP path: it carries no information, and
        # encoders that read neighbouring steps see padding as zeros
        seen = (features[..., D:2 * D] > 0).any(-1, keepdim=True)            # (…, 1)
        h = torch.where(seen, h, torch.zeros_like(h))
        return torch.cat([h, features[..., 2 * D:]], -1)                      # (…, F + U)


class ConvFrameDecoder(nn.Module):
    """Features (…, in_features) -> (…, out_channels * H * W): ``out_channels`` image
    channels per frame, flattened channel-major (one parameter map after another)."""

    def __init__(self, in_features: int, frame_shape: Sequence[int], out_channels: int,
                 channels: Sequence[int] = (32, 64, 64)) -> None:
        super().__init__()
        _, H, W = self.frame_shape = _check(frame_shape, channels)
        L = len(channels)
        self.grid = (channels[-1], math.ceil(H / 2 ** L), math.ceil(W / 2 ** L))
        self.linear = nn.Sequential(nn.Linear(in_features, math.prod(self.grid)), nn.ReLU())
        widths = [*reversed(channels)]
        layers: list[nn.Module] = []
        for i, c_in in enumerate(widths):
            last = i == L - 1
            c_out = out_channels if last else widths[i + 1]
            layers.append(nn.ConvTranspose2d(c_in, c_out, KERNEL, STRIDE, PADDING))
            if not last:
                layers.append(nn.ReLU())
        self.deconvs = nn.Sequential(*layers)
        self.out_channels = out_channels

    def forward(self, h: Tensor) -> Tensor:
        _, H, W = self.frame_shape
        lead = h.shape[:-1]
        grid = self.linear(h).reshape(-1, *self.grid)                         # (N, c, h0, w0)
        out = self.deconvs(grid)[..., :H, :W]                                 # (N, k, H, W)
        return out.reshape(*lead, self.out_channels * H * W)


class ConvGaussianObservation(GaussianObservation):
    """N(x | mu(h), diag sigma^2) per pixel, mu a :class:`ConvFrameDecoder` map; the
    variance one free parameter per pixel (``free_variance``) or a second decoder map."""

    def __init__(self, in_features: int, data_dim: int, min_var: float = 1e-4,
                 free_variance: bool = False, frame_shape: Sequence[int] | None = None,
                 channels: Sequence[int] = (32, 64, 64)) -> None:
        # the parent's linear head is replaced by the decoder: initialise the base only
        ObservationModel.__init__(self, in_features, data_dim)
        C = _check(frame_shape, channels)[0]
        self.free_variance, self.min_var = free_variance, float(min_var)
        self.decoder = ConvFrameDecoder(in_features, frame_shape, C * (1 if free_variance
                                                                      else 2), channels)
        self.raw_var = nn.Parameter(torch.zeros(data_dim)) if free_variance else None

    def forward(self, h: Tensor) -> tuple[Tensor, Tensor]:
        out = self.decoder(h)
        D = self.data_dim
        raw = self.raw_var.expand_as(out) if self.free_variance else out[..., D:]
        return out[..., :D], softplus(raw) + self.min_var


class ConvBernoulliObservation(BernoulliObservation):
    """Bernoulli(x | sigmoid(logits(h))) per pixel, the logits a
    :class:`ConvFrameDecoder` map."""

    def __init__(self, in_features: int, data_dim: int, min_var: float = 1e-4,
                 free_variance: bool = False, frame_shape: Sequence[int] | None = None,
                 channels: Sequence[int] = (32, 64, 64)) -> None:
        if free_variance:
            raise ConfigError("free_emission_variance applies to the 'gaussian' observation "
                              "only; a Bernoulli variance is fixed by its mean")
        ObservationModel.__init__(self, in_features, data_dim)
        C = _check(frame_shape, channels)[0]
        self.decoder = ConvFrameDecoder(in_features, frame_shape, C, channels)

    def forward(self, h: Tensor) -> tuple[Tensor]:
        return (self.decoder(h),)


CONV_OBSERVATIONS: dict[str, type] = {
    "gaussian": ConvGaussianObservation,
    "bernoulli": ConvBernoulliObservation,
}
