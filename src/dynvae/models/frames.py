"""Frame models as a config choice shared by the deep models: ``frame_encoder`` and
``frame_decoder`` ("mlp" or "conv", dynvae.nn.frames).

A model takes them through two hooks: its encoder reads ``frame_input(features)`` in
place of the observation features [x * mask, mask, u] (the identity for "mlp", a
:class:`~dynvae.nn.frames.ConvFrameEncoder` for "conv"), and its observation model is
built by :func:`observation_model` (the conv decoder's per-pixel maps for "conv"). The
frame shape is read from the training data (``DVAE.adapt_config``) or given as
``frame_shape``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

from torch import nn

from dynvae.errors import ConfigError
from dynvae.nn.frames import CONV_OBSERVATIONS, ConvFrameEncoder
from dynvae.nn.observation import OBSERVATIONS, ObservationModel

FRAME_MODELS = ("mlp", "conv")


@dataclass
class FrameOptions:
    """Config fields of the frame models (a base of the deep models' configs)."""

    frame_encoder: str = "mlp"           # "conv": stride-2 conv stack over each frame
    frame_decoder: str = "mlp"           # "conv": transposed-conv decoder to each frame
    frame_shape: tuple[int, ...] | None = None   # (C, H, W); None: read from the data
    frame_channels: tuple[int, ...] = (32, 64, 64)  # channels of each conv layer
    frame_features: int = 128            # size of the conv encoder's feature vector

    def check_frames(self) -> None:
        """ConfigError for an unknown frame model or bad sizes (called by __post_init__)."""
        for name in ("frame_encoder", "frame_decoder"):
            if getattr(self, name) not in FRAME_MODELS:
                raise ConfigError(f"unknown {name} {getattr(self, name)!r}; choose one of "
                                  f"{list(FRAME_MODELS)}")
        self.frame_channels = _positive("frame_channels", self.frame_channels)
        if self.frame_shape is not None:
            self.frame_shape = _positive("frame_shape", self.frame_shape)
            if len(self.frame_shape) != 3:
                raise ConfigError(f"frame_shape must be (C, H, W), got {self.frame_shape}")
        if isinstance(self.frame_features, bool) or not isinstance(self.frame_features, int) \
                or self.frame_features < 1:
            raise ConfigError(f"frame_features must be a positive integer, got "
                              f"{self.frame_features!r}")

    @property
    def uses_conv_frames(self) -> bool:
        return "conv" in (self.frame_encoder, self.frame_decoder)


def _positive(name: str, sizes) -> tuple[int, ...]:
    sizes = (sizes,) if isinstance(sizes, int) else tuple(sizes)
    if not sizes or any(isinstance(s, bool) or not isinstance(s, int) or s < 1
                        for s in sizes):
        raise ConfigError(f"{name} must be positive integers, got {sizes}")
    return sizes


def checked_frame_shape(config: FrameOptions, data_dim: int) -> tuple[int, int, int]:
    """The config's frame shape, which a conv frame model needs and must match D."""
    if config.frame_shape is None:
        raise ConfigError("frame_encoder/frame_decoder 'conv' need image frames, but the data "
                          "has no frame shape (C, H, W): read frames from a (N, T, H, W) or "
                          "(N, T, C, H, W) array, or set frame_shape")
    if math.prod(config.frame_shape) != data_dim:
        raise ConfigError(f"frame_shape {config.frame_shape} has "
                          f"{math.prod(config.frame_shape)} pixels, the data has D={data_dim}")
    return config.frame_shape


def frame_input(config: FrameOptions, data_dim: int, input_dim: int) -> tuple[nn.Module, int]:
    """The module turning observation features (…, 2D + U) into what the model's encoder
    reads, and that width: the identity (2D + U) or a conv encoder (F + U)."""
    if config.frame_encoder == "mlp":
        return nn.Identity(), 2 * data_dim + input_dim
    shape = checked_frame_shape(config, data_dim)
    encoder = ConvFrameEncoder(shape, input_dim, config.frame_features, config.frame_channels)
    return encoder, encoder.out_features


def observation_model(config: Any, in_features: int, data_dim: int,
                      free_variance: bool) -> ObservationModel:
    """p(x_t | features) of family ``config.observation`` (Gaussian for a config without
    one): a linear head ("mlp") or the conv frame decoder ("conv")."""
    family = getattr(config, "observation", "gaussian")
    if getattr(config, "frame_decoder", "mlp") == "mlp":
        return OBSERVATIONS[family](in_features, data_dim, config.min_var, free_variance)
    shape = checked_frame_shape(config, data_dim)
    return CONV_OBSERVATIONS[family](in_features, data_dim, config.min_var, free_variance,
                                     shape, config.frame_channels)


def with_data_frame_shape(config: Any, train: Any) -> tuple[Any, dict]:
    """``config`` with the training data's frame shape when it takes frame models and has
    none yet, and the record of that choice."""
    shape = getattr(train, "frame_shape", None)
    if not isinstance(config, FrameOptions) or shape is None or config.frame_shape is not None:
        return config, {}
    return replace(config, frame_shape=tuple(shape)), {"frame_shape": list(shape)}
