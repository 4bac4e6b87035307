"""Encoders of the Deep Kalman Filter, selected by name in its config."""

from dynvae.nn.encoders.backward import BackwardEncoder
from dynvae.nn.encoders.base import CombinerEncoder, Encoder, reverse_padded
from dynvae.nn.encoders.bidirectional import BidirectionalEncoder
from dynvae.nn.encoders.context import BackwardContext
from dynvae.nn.encoders.filtering import FilteringEncoder
from dynvae.nn.encoders.local import LocalEncoder

# name -> class; each takes (feature_dim, latent_dim, hidden_size, min_var)
ENCODERS: dict[str, type[Encoder]] = {
    "backward": BackwardEncoder,        # q(z_t | z_{t-1}, x_{t:T})  seed eq. 16/19
    "local": LocalEncoder,              # q(z_t | z_{t-1}, x_t)
    "filtering": FilteringEncoder,      # q(z_t | z_{t-1}, x_{1:t})
    "bidirectional": BidirectionalEncoder,  # q(z_t | z_{t-1}, x_{1:T})
}

__all__ = [
    "ENCODERS",
    "BackwardContext",
    "BackwardEncoder",
    "BidirectionalEncoder",
    "CombinerEncoder",
    "Encoder",
    "FilteringEncoder",
    "LocalEncoder",
    "reverse_padded",
]
