"""dynvae.sde: stochastic calculus toolkit (Brownian motion, SDE solvers, processes)."""

from dynvae.sde.adaptive import AdaptiveStats, sdeint_adaptive
from dynvae.sde.adjoint import Adjoint
from dynvae.sde.brownian import BrownianMotion, BrownianPath, brownian_increments
from dynvae.sde.brownian_tree import BrownianTree
from dynvae.sde.girsanov import DiagonalSDE, GirsanovKL, GirsanovLogRatio
from dynvae.sde.gradients import Backprop, CheckpointedBlocks, Gradients
from dynvae.sde.ito import ito_correction, ito_lemma, to_ito, to_stratonovich
from dynvae.sde.linear import LinearSDE, solve_lyapunov, van_loan
from dynvae.sde.sde import SDE, NoiseType, SDEType, SDEWithRunningCost, check_sde
from dynvae.sde.sdeint import SDESolution, sdeint, step_schedule
from dynvae.sde.solvers import (
    SRK,
    Compiled,
    EulerHeun,
    EulerMaruyama,
    Heun,
    Milstein,
    Solver,
    StratonovichMilstein,
)

__all__ = [
    "AdaptiveStats", "sdeint_adaptive", "Adjoint", "Backprop", "CheckpointedBlocks", "Gradients",
    "BrownianMotion", "BrownianPath", "BrownianTree", "brownian_increments", "SDE",
    "SDEWithRunningCost", "NoiseType", "SDEType",
    "check_sde", "sdeint", "SDESolution", "step_schedule", "Solver", "Compiled", "EulerMaruyama",
    "Milstein", "StratonovichMilstein", "SRK", "Heun", "EulerHeun", "ito_correction",
    "ito_lemma", "to_ito", "to_stratonovich",
    "LinearSDE", "solve_lyapunov", "van_loan", "DiagonalSDE", "GirsanovKL", "GirsanovLogRatio",
]
