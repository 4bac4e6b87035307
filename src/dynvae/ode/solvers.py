"""ODE solvers as strategy objects: a Runge-Kutta tableau plus how steps are chosen.

Fixed-step solvers (:class:`Euler`, :class:`Midpoint`, :class:`RK4`) take the steps
``odeint`` schedules: every observation interval cut into equal steps of at most ``dt``.
Adaptive solvers (:class:`DormandPrince`, :class:`BogackiShampine`) choose each row's
steps from the embedded error estimate, with the standard controller (Hairer, Norsett &
Wanner, "Solving ODEs I", sec. II.4): a step is accepted when the scaled RMS error
    err = sqrt(mean_i (e_i / (atol + rtol max(|z_i|, |z_next,i|)))^2) <= 1,
and the next step is h * clamp(safety * err^(-1 / (q + 1)), min_factor, max_factor), q the
order of the embedded solution.
"""

from __future__ import annotations

import abc
import math
from typing import ClassVar

from dynvae.errors import ConfigError
from dynvae.ode.tableau import (
    BOGACKI_SHAMPINE,
    DORMAND_PRINCE,
    EULER,
    MIDPOINT,
    RK4_CLASSIC,
    ButcherTableau,
)


class ODESolver(abc.ABC):
    """Abstract explicit Runge-Kutta solver: ``tableau`` and whether it adapts its steps."""

    tableau: ClassVar[ButcherTableau]
    adaptive: ClassVar[bool]

    @property
    def order(self) -> int:
        """Global order of accuracy: the error at a fixed time is O(h^order)."""
        return self.tableau.order

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class FixedStep(ODESolver):
    """A solver that takes the steps it is given (``odeint``'s ``dt``)."""

    adaptive = False


class Euler(FixedStep):
    """Forward Euler, order 1."""

    tableau = EULER


class Midpoint(FixedStep):
    """Explicit midpoint rule, order 2."""

    tableau = MIDPOINT


class RK4(FixedStep):
    """The classical fourth-order Runge-Kutta method."""

    tableau = RK4_CLASSIC


class Adaptive(ODESolver):
    """Embedded pair with error control; every row of a batch takes its own steps.

    rtol, atol: relative and absolute tolerances of the local error. max_steps: attempted
    steps after which the solve fails (NumericalError). safety, min_factor, max_factor:
    the step-size controller (module docstring).
    """

    adaptive = True

    def __init__(self, rtol: float = 1e-3, atol: float = 1e-4, max_steps: int = 10_000,
                 safety: float = 0.9, min_factor: float = 0.2, max_factor: float = 10.0
                 ) -> None:
        for name, v in (("rtol", rtol), ("atol", atol)):
            if not (isinstance(v, int | float) and math.isfinite(v) and v >= 0):
                raise ConfigError(f"{type(self).__name__}: {name} must be a finite number "
                                  f">= 0, got {v!r}")
        if rtol == 0 and atol == 0:
            raise ConfigError(f"{type(self).__name__}: rtol and atol cannot both be 0")
        if isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 1:
            raise ConfigError(f"{type(self).__name__}: max_steps must be a positive integer, "
                              f"got {max_steps!r}")
        if not (0 < safety <= 1 and 0 < min_factor < 1 < max_factor):
            raise ConfigError(f"{type(self).__name__}: need 0 < safety <= 1 and min_factor < "
                              f"1 < max_factor, got {safety}, {min_factor}, {max_factor}")
        self.rtol, self.atol, self.max_steps = float(rtol), float(atol), max_steps
        self.safety, self.min_factor, self.max_factor = safety, min_factor, max_factor

    @property
    def exponent(self) -> float:
        """1 / (q + 1): the controller's exponent, q the embedded order."""
        return 1.0 / (self.tableau.error_order + 1)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(rtol={self.rtol:g}, atol={self.atol:g})"


class DormandPrince(Adaptive):
    """Dormand-Prince 5(4) ("dopri5"), first same as last: six new stages per step."""

    tableau = DORMAND_PRINCE


class BogackiShampine(Adaptive):
    """Bogacki-Shampine 3(2) ("bosh3"), first same as last: three new stages per step."""

    tableau = BOGACKI_SHAMPINE
