"""Which Kalman engine computes the state-space GP: the engines of :mod:`dynvae.ssm.engines`.

``AutoKalman`` (name "auto") is the default of :class:`dynvae.gp.StateSpaceGP` and of
``dynvae gp``: C values with Fisher-identity gradients for fitting on the CPU, the
associative scan where gradients must flow through the posterior moments, a double
backward is asked for, or the tensors live on a GPU. See docs/engines.md.
"""

from dynvae.ssm.engines import (
    ENGINES,
    AutoKalman,
    FisherKalman,
    KalmanEngine,
    NativeKalman,
    ParallelKalman,
    ScalarKalman,
    SequentialKalman,
)

__all__ = ["ENGINES", "AutoKalman", "FisherKalman", "KalmanEngine", "NativeKalman",
           "ParallelKalman", "ScalarKalman", "SequentialKalman"]
