"""Which Kalman engine computes the state-space GP: strategy objects over dynvae.ssm."""

from __future__ import annotations

from abc import ABC, abstractmethod

from torch import Tensor

from dynvae.errors import ConfigError
from dynvae.ssm import FilterResult, LinearGaussianSSM, SmootherResult, kalman_filter, rts_smoother


class KalmanEngine(ABC):
    """Runs the filter and the smoother of an LGSSM; x (*batch, T, D), mask like x."""

    @abstractmethod
    def filter(self, model: LinearGaussianSSM, x: Tensor, mask: Tensor) -> FilterResult: ...

    @abstractmethod
    def smoother(self, model: LinearGaussianSSM, x: Tensor, mask: Tensor) -> SmootherResult: ...


class SequentialKalman(KalmanEngine):
    """The sequential filter and RTS smoother: O(T) work, O(T) depth."""

    def filter(self, model, x, mask):
        return kalman_filter(model, x, mask)

    def smoother(self, model, x, mask):
        return rts_smoother(model, x, mask)


class ParallelKalman(KalmanEngine):
    """Associative-scan filter and smoother (Sarkka and Garcia-Fernandez 2021): O(log T) depth."""

    def __init__(self) -> None:
        try:
            from dynvae.ssm import parallel
        except ImportError as err:   # pragma: no cover - depends on the installed tree
            raise ConfigError("the parallel Kalman engine needs dynvae.ssm.parallel") from err
        self._parallel = parallel

    def filter(self, model, x, mask):
        return self._parallel.parallel_kalman_filter(model, x, mask)

    def smoother(self, model, x, mask):
        return self._parallel.parallel_rts_smoother(model, x, mask)


ENGINES = {"sequential": SequentialKalman, "parallel": ParallelKalman}
