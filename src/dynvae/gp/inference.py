"""Which Kalman engine computes the state-space GP: strategy objects over dynvae.ssm."""

from __future__ import annotations

from abc import ABC, abstractmethod

from torch import Tensor

from dynvae.errors import ConfigError
from dynvae.ssm import FilterResult, LinearGaussianSSM, SmootherResult, kalman_filter, rts_smoother
from dynvae.ssm.kalman import check_inputs


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


class ScalarKalman(KalmanEngine):
    """Sequential filter and smoother for one observed dim (dynvae.ssm.scalar): the
    data-free covariance pass and linear mean recursions, far fewer operations per step
    than the general engines; the GP-VAE's default for its per-channel sites."""

    def filter(self, model, x, mask):
        from dynvae.ssm.scalar import scalar_kalman_filter
        return scalar_kalman_filter(model, x, mask)

    def smoother(self, model, x, mask):
        from dynvae.ssm.scalar import scalar_rts_smoother
        return scalar_rts_smoother(model, x, mask)


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


class FisherKalman(KalmanEngine):
    """Native C filter and smoother for values; gradients by Fisher's identity.

    The log-likelihood value comes from the C smoother (dynvae.ssm.native); its gradient
    is that of the expected complete-data log-likelihood with the smoothed moments held
    fixed (dynvae.gp.fisher), which equals the exact first derivative. Only first
    derivatives are valid: no double backward (Hessians) through this engine. The other
    outputs (means, covariances) are values without autograd.
    """

    def __init__(self) -> None:
        from dynvae.ssm import native
        if not native.native_available():
            raise ConfigError("the fisher Kalman engine needs the native C back end "
                              "(dynvae.ssm.native), which did not compile or load here; "
                              "use the 'parallel' or 'sequential' engine")
        from dynvae.gp import fisher
        self._native, self._fisher = native, fisher

    def _run(self, model, x, mask) -> SmootherResult:
        mask = check_inputs(model, x, mask, None)
        sm = self._native.native_rts_smoother(self._fisher.detached(model), x.detach(), mask)
        if not self._native.needs_grad(model, x):
            return sm
        q = self._fisher.fisher_surrogate(model, x, mask, sm)
        ll = sm.log_likelihood + (q - q.detach())                  # value + Fisher gradient
        return sm._replace(log_likelihood=ll, filtered=sm.filtered._replace(log_likelihood=ll))

    def filter(self, model, x, mask):
        return self._run(model, x, mask).filtered

    def smoother(self, model, x, mask):
        return self._run(model, x, mask)


ENGINES = {"sequential": SequentialKalman, "parallel": ParallelKalman, "fisher": FisherKalman,
           "scalar": ScalarKalman}
