"""Linear Gaussian state-space models: exact Kalman inference (sequential and parallel)."""

from dynvae.ssm.engines import (
    ENGINES,
    AutoKalman,
    FisherKalman,
    KalmanEngine,
    NativeKalman,
    ParallelKalman,
    SequentialKalman,
)
from dynvae.ssm.kalman import (
    FilterResult,
    SmootherResult,
    ffbs_sample,
    kalman_filter,
    rts_smoother,
)
from dynvae.ssm.model import LinearGaussianSSM
from dynvae.ssm.native import native_available, native_kalman_filter, native_rts_smoother
from dynvae.ssm.parallel import (
    CompiledScan,
    EagerScan,
    ScanMethod,
    parallel_kalman_filter,
    parallel_rts_smoother,
)
from dynvae.ssm.scan import associative_scan

__all__ = [
    "ENGINES",
    "AutoKalman",
    "CompiledScan",
    "EagerScan",
    "FilterResult",
    "FisherKalman",
    "KalmanEngine",
    "LinearGaussianSSM",
    "NativeKalman",
    "ParallelKalman",
    "ScanMethod",
    "SequentialKalman",
    "SmootherResult",
    "associative_scan",
    "ffbs_sample",
    "kalman_filter",
    "native_available",
    "native_kalman_filter",
    "native_rts_smoother",
    "parallel_kalman_filter",
    "parallel_rts_smoother",
    "rts_smoother",
]
