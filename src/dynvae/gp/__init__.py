"""State-space Gaussian processes: kernels as linear SDEs, O(T) exact GP regression."""

from dynvae.gp.discretize import discretize, gp_state_space_model
from dynvae.gp.exact import exact_log_marginal_likelihood, exact_posterior
from dynvae.gp.inference import (
    ENGINES,
    AutoKalman,
    FisherKalman,
    KalmanEngine,
    NativeKalman,
    ParallelKalman,
    SequentialKalman,
)
from dynvae.gp.mean import MEANS, ConstantMean, LinearMean, MeanFunction, ZeroMean
from dynvae.gp.regression import FitResult, GPPrediction, StateSpaceGP

__all__ = [
    "ENGINES", "MEANS", "AutoKalman", "ConstantMean", "FisherKalman", "FitResult",
    "GPPrediction", "KalmanEngine", "LinearMean", "MeanFunction", "NativeKalman",
    "ParallelKalman", "SequentialKalman", "StateSpaceGP", "ZeroMean", "discretize",
    "exact_log_marginal_likelihood", "exact_posterior", "gp_state_space_model",
]
