"""Kalman engines: strategy objects that run the filter, the smoother and the
log-likelihood of an LGSSM, and the ``auto`` engine that picks the fastest valid one.

| engine | values | gradients | notes |
|---|---|---|---|
| :class:`SequentialKalman` | Python loop over T | autograd, any order | reference; slow |
| :class:`ParallelKalman` | associative scans, O(log T) depth | autograd, any order | any device |
| :class:`NativeKalman` | C, float64, CPU | none (refuses grad) | fastest values |
| :class:`FisherKalman` | C, float64, CPU | first order, log-likelihood only | Fisher's identity |
| :class:`AutoKalman` | picks per call, see its docstring | as the picked engine | the default |

Every engine checks its moments once per call (:mod:`dynvae.ssm.guard`) and raises
:class:`~dynvae.errors.NumericalError` naming itself and the step when they explode.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from torch import Tensor

from dynvae.errors import ConfigError
from dynvae.ssm import native
from dynvae.ssm.kalman import (
    FilterResult,
    SmootherResult,
    check_inputs,
    kalman_filter,
    rts_smoother,
)
from dynvae.ssm.model import LinearGaussianSSM
from dynvae.ssm.parallel import ScanMethod, parallel_kalman_filter, parallel_rts_smoother


class KalmanEngine(ABC):
    """Filter, smoother and log-likelihood of an LGSSM.

    Arguments of every method: model, x (*batch, T, D), optional mask like x (True where
    observed), optional inputs u (*batch, T, U); as :func:`dynvae.ssm.kalman_filter`.
    """

    name: str = ""

    @abstractmethod
    def filter(self, model: LinearGaussianSSM, x: Tensor, mask: Tensor | None = None,
               u: Tensor | None = None) -> FilterResult: ...

    @abstractmethod
    def smoother(self, model: LinearGaussianSSM, x: Tensor, mask: Tensor | None = None,
                 u: Tensor | None = None) -> SmootherResult: ...

    def log_likelihood(self, model: LinearGaussianSSM, x: Tensor, mask: Tensor | None = None,
                       u: Tensor | None = None) -> Tensor:
        """log p(x_observed), (*batch,)."""
        return self.filter(model, x, mask, u).log_likelihood


class SequentialKalman(KalmanEngine):
    """The sequential filter and RTS smoother: O(T) work, O(T) depth, autograd."""

    name = "sequential"

    def filter(self, model, x, mask=None, u=None):
        return kalman_filter(model, x, mask, u)

    def smoother(self, model, x, mask=None, u=None):
        return rts_smoother(model, x, mask, u)


class ParallelKalman(KalmanEngine):
    """Associative-scan filter and smoother (Sarkka and Garcia-Fernandez 2021): O(log T)
    depth, autograd of any order, any device. ``method``: how scans are evaluated."""

    name = "parallel"

    def __init__(self, method: ScanMethod | None = None) -> None:
        self.method = method

    def filter(self, model, x, mask=None, u=None):
        return parallel_kalman_filter(model, x, mask, u, method=self.method)

    def smoother(self, model, x, mask=None, u=None):
        return parallel_rts_smoother(model, x, mask, u, method=self.method)


def _require_native(engine: str) -> None:
    if not native.native_available():
        raise ConfigError(f"the {engine} Kalman engine needs the native C back end "
                          "(dynvae.ssm.native), which did not compile or load here; use the "
                          "'auto', 'parallel' or 'sequential' engine")


class NativeKalman(KalmanEngine):
    """The C filter and smoother (dynvae.ssm.native): values only, float64 on the CPU;
    inputs that require grad are refused."""

    name = "native"

    def __init__(self) -> None:
        _require_native(self.name)

    def filter(self, model, x, mask=None, u=None):
        return native.native_kalman_filter(model, x, mask, u)

    def smoother(self, model, x, mask=None, u=None):
        return native.native_rts_smoother(model, x, mask, u)


class FisherKalman(KalmanEngine):
    """Native C filter and smoother for values; gradients by Fisher's identity.

    The log-likelihood value comes from the C smoother; its gradient is that of the
    expected complete-data log-likelihood with the smoothed moments held fixed
    (dynvae.ssm.fisher), which equals the exact first derivative. Only first derivatives:
    a double backward raises. Means and covariances are values without autograd.
    """

    name = "fisher"

    def __init__(self) -> None:
        _require_native(self.name)

    def _run(self, model, x, mask, u) -> SmootherResult:
        from dynvae.ssm import fisher
        mask = check_inputs(model, x, mask, u)
        sm = native.native_rts_smoother(fisher.detached(model), x.detach(), mask,
                                        None if u is None else u.detach())
        if not native.needs_grad(model, x, u):
            return sm
        ll = fisher.fisher_log_likelihood(model, x, mask, sm, u)
        return sm._replace(log_likelihood=ll, filtered=sm.filtered._replace(log_likelihood=ll))

    def filter(self, model, x, mask=None, u=None):
        return self._run(model, x, mask, u).filtered

    def smoother(self, model, x, mask=None, u=None):
        return self._run(model, x, mask, u)


class AutoKalman(KalmanEngine):
    """The fastest engine valid for each call (the default everywhere).

    * no gradient needed, CPU: :class:`NativeKalman` (C);
    * gradient of the log-likelihood only (:meth:`log_likelihood`), CPU:
      :class:`FisherKalman` (C values, exact first derivatives by Fisher's identity);
    * gradients through the means and covariances (``filter``/``smoother`` with inputs that
      require grad), ``higher_order=True`` (double backward, Hessians), tensors on a GPU,
      or no C compiler: :class:`ParallelKalman`.
    The sequential engine is never picked: it computes the same as the parallel one, slower.
    """

    name = "auto"

    def __init__(self, higher_order: bool = False, method: ScanMethod | None = None) -> None:
        self.higher_order = higher_order
        self.parallel = ParallelKalman(method)
        self._native: tuple[NativeKalman, FisherKalman] | None = None

    def _natives(self) -> tuple[NativeKalman, FisherKalman] | None:
        if self._native is None and native.native_available():
            self._native = (NativeKalman(), FisherKalman())
        return self._native

    def choose(self, model: LinearGaussianSSM, x: Tensor, u: Tensor | None = None,
               likelihood_only: bool = False) -> KalmanEngine:
        """The engine a call with these tensors would run."""
        natives = None if x.device.type != "cpu" else self._natives()
        if natives is None:
            return self.parallel
        if not native.needs_grad(model, x, u):
            return natives[0]
        if likelihood_only and not self.higher_order:
            return natives[1]
        return self.parallel

    def filter(self, model, x, mask=None, u=None):
        return self.choose(model, x, u).filter(model, x, mask, u)

    def smoother(self, model, x, mask=None, u=None):
        return self.choose(model, x, u).smoother(model, x, mask, u)

    def log_likelihood(self, model, x, mask=None, u=None):
        return self.choose(model, x, u, likelihood_only=True).log_likelihood(model, x, mask, u)


class ScalarKalman(KalmanEngine):
    """Sequential filter and smoother for one observed dimension (dynvae.ssm.scalar): a
    data-free covariance pass and linear mean recursions, far fewer operations per step
    than the general engines; the GP-VAE's default for its per-channel sites. No inputs."""

    name = "scalar"

    def filter(self, model, x, mask=None, u=None):
        from dynvae.ssm.scalar import scalar_kalman_filter
        _no_inputs(self.name, u)
        return scalar_kalman_filter(model, x, mask)

    def smoother(self, model, x, mask=None, u=None):
        from dynvae.ssm.scalar import scalar_rts_smoother
        _no_inputs(self.name, u)
        return scalar_rts_smoother(model, x, mask)


def _no_inputs(name: str, u) -> None:
    if u is not None:
        raise ConfigError(f"the {name} Kalman engine takes no control inputs")


ENGINES: dict[str, type[KalmanEngine]] = {
    "auto": AutoKalman, "sequential": SequentialKalman, "parallel": ParallelKalman,
    "native": NativeKalman, "fisher": FisherKalman, "scalar": ScalarKalman}
