"""Linear Gaussian state-space models: exact Kalman inference (sequential and parallel)."""

from dynvae.ssm.kalman import (
    FilterResult,
    SmootherResult,
    ffbs_sample,
    kalman_filter,
    rts_smoother,
)
from dynvae.ssm.model import LinearGaussianSSM

__all__ = [
    "FilterResult",
    "LinearGaussianSSM",
    "SmootherResult",
    "ffbs_sample",
    "kalman_filter",
    "rts_smoother",
]
