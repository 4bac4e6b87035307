"""Neural building blocks of the deep models: MLPs, Gaussian heads, the combiner,
transitions, observation models and encoders."""

from dynvae.nn.combiner import Combiner
from dynvae.nn.mlp import MLP, FreeVariance, GaussianHead, GaussianMLP, inverse_softplus, trunk
from dynvae.nn.observation import (
    OBSERVATIONS,
    BernoulliObservation,
    GaussianObservation,
    ObservationModel,
)
from dynvae.nn.transition import (
    INITIAL_PRIORS,
    TRANSITIONS,
    GatedTransition,
    GaussianMLPTransition,
    InitialPrior,
    LearnedGaussianPrior,
    StandardNormalPrior,
    Transition,
)

__all__ = [
    "INITIAL_PRIORS",
    "MLP",
    "OBSERVATIONS",
    "TRANSITIONS",
    "BernoulliObservation",
    "Combiner",
    "FreeVariance",
    "GatedTransition",
    "GaussianHead",
    "GaussianMLP",
    "GaussianMLPTransition",
    "GaussianObservation",
    "InitialPrior",
    "LearnedGaussianPrior",
    "ObservationModel",
    "StandardNormalPrior",
    "Transition",
    "inverse_softplus",
    "trunk",
]
