"""Stochastic Runge-Kutta of strong order 1.5 for additive noise, Rossler 2010,
"Runge-Kutta methods for the strong approximation of solutions of stochastic
differential equations", SIAM J. Numer. Anal. 48(3), scheme SRA with tableau SRA1:

    Z_i = z + sum_j A0_ij f(t + c0_j h, Z_j) h + sum_j B0_ij g(t + c1_j h) I10 / h
    z1  = z + sum_i alpha_i f(t + c0_i h, Z_i) h
            + sum_i g(t + c1_i h) (beta1_i I1 + beta2_i I10 / h)

with I1 = dW and I10 = int_t^{t+h} (W(s) - W(t)) ds = h (H + dW / 2), H being the
space-time Levy area of the step.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from dynvae.sde.sde import NoiseType, SDEType
from dynvae.sde.solvers.base import Solver


@dataclass(frozen=True)
class SRATableau:
    """Coefficients of an explicit SRA scheme (strictly lower-triangular A0, B0)."""

    c0: tuple[float, ...]
    c1: tuple[float, ...]
    a0: tuple[tuple[float, ...], ...]
    b0: tuple[tuple[float, ...], ...]
    alpha: tuple[float, ...]
    beta1: tuple[float, ...]
    beta2: tuple[float, ...]


# Rossler 2010, Table 6.1 (SRA1): strong order 1.5, weak order 2.0.
SRA1 = SRATableau(
    c0=(0.0, 0.75), c1=(1.0, 0.0),
    a0=((), (0.75,)), b0=((), (1.5,)),
    alpha=(1 / 3, 2 / 3), beta1=(1.0, 0.0), beta2=(-1.0, 1.0),
)


@dataclass(frozen=True)
class SRK(Solver):
    """Strong order 1.5, weak order 2.0 for additive noise (Ito = Stratonovich)."""

    tableau: SRATableau = field(default=SRA1)

    strong_order: ClassVar[float] = 1.5
    weak_order: ClassVar[float] = 2.0
    sde_type: ClassVar[SDEType] = SDEType.ITO
    noise_types: ClassVar[frozenset] = frozenset({NoiseType.ADDITIVE})
    needs_levy_area: ClassVar[bool] = True

    def step(self, sde, drift_cost, t0, t1, h, z, dW, H):
        tab = self.tableau
        i10_h = H + 0.5 * dW  # I10 / h, (B, W)
        g_at = {c: sde.diffusion(t0 + c * h, z) for c in set(tab.c1)}  # g independent of z
        g_i10 = {c: sde.noise.prod(g, i10_h) for c, g in g_at.items()}
        fs, z1, cost = [], z, None
        for i in range(len(tab.alpha)):
            zi = z
            for j, (a, b) in enumerate(zip(tab.a0[i], tab.b0[i], strict=True)):
                zi = zi + a * h * fs[j] + b * g_i10[tab.c1[j]]
            f, c = drift_cost(t0 + tab.c0[i] * h, zi)
            fs.append(f)
            z1 = z1 + (tab.alpha[i] * h) * f
            if c is not None:
                cost = tab.alpha[i] * h * c if cost is None else cost + tab.alpha[i] * h * c
        for i, c1 in enumerate(tab.c1):
            w = tab.beta1[i] * dW + tab.beta2[i] * i10_h
            z1 = z1 + sde.noise.prod(g_at[c1], w)
        return z1, cost

    def __repr__(self) -> str:
        return "SRK(SRA1)" if self.tableau is SRA1 else f"SRK({self.tableau})"
