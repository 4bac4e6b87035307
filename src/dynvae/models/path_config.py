"""The configuration fields the path models (STORN, SRNN, RVAE, DSAE) share: one latent
sequence of ``latent_dim``, GRUs of ``hidden_size`` (generative) and ``encoder_hidden``
(inference), MLPs of ``mlp_hidden``, a Gaussian or Bernoulli observation. Each model's
Config adds its own fields and checks them after ``super().__post_init__()``."""

from __future__ import annotations

from dataclasses import dataclass

from dynvae.models.common import (
    FEEDBACKS,
    DictConfig,
    as_sizes,
    check_choice,
    check_hide_rate,
    check_observation,
    check_positive,
)
from dynvae.models.frames import FrameOptions
from dynvae.nn.observation import OBSERVATIONS


@dataclass
class PathConfig(FrameOptions, DictConfig):
    """latent_dim: Z; hidden_size: the generative GRU; encoder_hidden: the encoder GRUs;
    mlp_hidden: hidden layers of the heads and the emission (empty: affine); observation:
    "gaussian" or "bernoulli"; free_emission_variance: one learned variance per data
    dimension instead of a function of the state; min_var: variance floor;
    n_predict_samples: posterior draws averaged by reconstruct and forecast.
    frame_encoder, frame_decoder: "conv" for convolutional frame models on image data:
    every network that reads a frame reads the conv encoder's features, the emission is
    the conv decoder (dynvae.models.frames)."""

    latent_dim: int = 16
    hidden_size: int = 64
    encoder_hidden: int = 64
    mlp_hidden: tuple[int, ...] = (64,)
    observation: str = "gaussian"
    free_emission_variance: bool = False
    min_var: float = 1e-4
    n_predict_samples: int = 64

    def __post_init__(self) -> None:
        check_choice("observation", self.observation, OBSERVATIONS)
        self.check_frames()
        self.mlp_hidden = as_sizes("mlp_hidden", self.mlp_hidden)
        check_positive(latent_dim=self.latent_dim, hidden_size=self.hidden_size,
                       encoder_hidden=self.encoder_hidden,
                       n_predict_samples=self.n_predict_samples)
        check_observation(self.observation, self.free_emission_variance, self.min_var)


@dataclass
class FeedbackPathConfig(PathConfig):
    """A path model whose generation feeds x_{t-1} back into a recurrence:
    generation_feedback "mean" (the decoder mean) or "sample" (a draw: exact ancestral
    sampling). hide_from_recurrence: share of the observed entries of x_{t-1} hidden at
    random from that recurrence while training (still scored;
    ``dynvae.models.common.encoder_mask``), so that it learns to read an unseen entry
    (carried forward, mask 0) as imputation will show it one."""

    generation_feedback: str = "mean"
    hide_from_recurrence: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice("generation_feedback", self.generation_feedback, FEEDBACKS)
        check_hide_rate(self.hide_from_recurrence, "hide_from_recurrence")
