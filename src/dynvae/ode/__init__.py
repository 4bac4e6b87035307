"""dynvae.ode: explicit Runge-Kutta ODE solvers (fixed and adaptive steps) on shared or
per-sequence time grids, for the latent ODE and its ODE-RNN encoder."""

from dynvae.ode.odeint import advance, odeint
from dynvae.ode.solvers import (
    RK4,
    Adaptive,
    BogackiShampine,
    DormandPrince,
    Euler,
    FixedStep,
    Midpoint,
    ODESolver,
)
from dynvae.ode.tableau import ButcherTableau, rk_step

__all__ = ["RK4", "Adaptive", "BogackiShampine", "ButcherTableau", "DormandPrince", "Euler",
           "FixedStep", "Midpoint", "ODESolver", "advance", "odeint", "rk_step"]
