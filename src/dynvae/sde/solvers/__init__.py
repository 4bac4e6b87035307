"""Fixed-step SDE solvers; each declares its orders, calculus and noise types."""

from dynvae.sde.solvers.base import Solver
from dynvae.sde.solvers.compiled import Compiled
from dynvae.sde.solvers.euler_heun import EulerHeun
from dynvae.sde.solvers.euler_maruyama import EulerMaruyama
from dynvae.sde.solvers.heun import Heun
from dynvae.sde.solvers.milstein import Milstein, StratonovichMilstein
from dynvae.sde.solvers.srk import SRA1, SRK, SRATableau

__all__ = ["Solver", "Compiled", "EulerMaruyama", "Milstein", "StratonovichMilstein", "SRK",
           "SRATableau", "SRA1", "Heun", "EulerHeun"]
