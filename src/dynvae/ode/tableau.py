"""Explicit Runge-Kutta methods as data: Butcher tableaux, and the one step they define.

A step of an s-stage method from (t, z) with step h (Hairer, Norsett & Wanner, "Solving
Ordinary Differential Equations I", sec. II.1):
    k_i = f(t + c_i h, z + h sum_{j<i} a_ij k_j),    z_next = z + h sum_i b_i k_i,
and for an embedded pair the local error estimate h sum_i e_i k_i with e = b - b_hat
(sec. II.4); inside a step, dense output interpolates the solution (sec. II.6). A
tableau is "first same as last" (FSAL) when its last stage is evaluated at z_next, so
that it is the first stage of the next step.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

# f(t, z): t 0-dim or (R, 1), z (R, Z) -> dz/dt (R, Z)
VectorField = Callable[[Tensor, Tensor], Tensor]
StepSize = float | Tensor  # a Python float (shared grid) or (R, 1) per row


@dataclass(frozen=True)
class ButcherTableau:
    """c (s,), a (s rows, row i holding a_i0..a_i,i-1), b (s,); ``error`` (s,) the weights
    b - b_hat of the embedded estimate (None: no estimate); ``order`` of the solution;
    ``error_order`` the order of the embedded solution (its local error is O(h^(q+1)));
    ``mid`` (s,) weights of the solution at the step's midpoint, z + h sum_i mid_i k_i,
    for dense output (None: cubic Hermite interpolation only)."""

    name: str
    c: tuple[float, ...]
    a: tuple[tuple[float, ...], ...]
    b: tuple[float, ...]
    order: int
    error: tuple[float, ...] | None = None
    error_order: int | None = None
    mid: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        s = len(self.c)
        if len(self.a) != s or len(self.b) != s or any(len(r) != i for i, r in enumerate(self.a)):
            raise ValueError(f"tableau {self.name}: c, a, b must describe {s} stages")
        if self.error is not None and len(self.error) != s:
            raise ValueError(f"tableau {self.name}: error weights must have {s} entries")

    @property
    def fsal(self) -> bool:
        """Whether the last stage is f(t + h, z_next) (its a-row equals b, c = 1)."""
        return self.c[-1] == 1.0 and self.a[-1] + (0.0,) == self.b


def rk_step(tableau: ButcherTableau, f: VectorField, t: Tensor, h: StepSize, z: Tensor,
            k1: Tensor | None = None) -> tuple[Tensor, list[Tensor]]:
    """One step of the method: z (R, Z) at t -> (z_next (R, Z), stages k_1..k_s).

    ``k1``: f(t, z) when already known (FSAL). A zero step (h = 0) returns z unchanged.
    """
    ks = [f(t, z) if k1 is None else k1]
    for c_i, row in zip(tableau.c[1:], tableau.a[1:], strict=True):
        dz = _combine(row, ks)
        ks.append(f(t + c_i * h, z if dz is None else z + h * dz))
    return z + h * _combine(tableau.b, ks), ks


def error_estimate(tableau: ButcherTableau, h: StepSize, ks: list[Tensor]) -> Tensor:
    """Local error estimate h sum_i e_i k_i of an embedded pair, (R, Z)."""
    return h * _combine(tableau.error, ks)


def dense_output(tableau: ButcherTableau, h: Tensor, z0: Tensor, z1: Tensor,
                 ks: list[Tensor], theta: Tensor) -> Tensor:
    """The solution inside a step from z0 to z1 (each (R, Z)) of size h (R, 1), at the
    fractions theta (R, T) of the step -> (R, T, Z).

    With midpoint weights: the quartic through z0, z_mid, z1 with slopes f0 = k_1 and
    f1 = f(t + h, z1) (the last stage of a first-same-as-last pair); otherwise the cubic
    Hermite interpolant of z0, f0, z1, f1.
    """
    f0, f1 = h * ks[0], h * ks[-1]                                  # slopes in theta
    th = theta[..., None]                                            # (R, T, 1)
    z0, z1, f0, f1 = (v[:, None] for v in (z0, z1, f0, f1))          # (R, 1, Z)
    if tableau.mid is None:
        h00, h10 = (1 + 2 * th) * (1 - th) ** 2, th * (1 - th) ** 2
        h01, h11 = th ** 2 * (3 - 2 * th), th ** 2 * (th - 1)
        return h00 * z0 + h10 * f0 + h01 * z1 + h11 * f1
    zm = z0 + (h * _combine(tableau.mid, ks))[:, None]
    # p(th) = a th^4 + b th^3 + c th^2 + f0 th + z0, with p(1) = z1, p'(1) = f1, p(1/2) = zm
    a = 2 * (f1 - f0) - 8 * (z1 + z0) + 16 * zm
    b = 5 * f0 - 3 * f1 + 18 * z0 + 14 * z1 - 32 * zm
    c = f1 - 4 * f0 - 11 * z0 - 5 * z1 + 16 * zm
    return (((a * th + b) * th + c) * th + f0) * th + z0


_WEIGHTS: dict[tuple, Tensor] = {}  # weight vectors as tensors, per dtype and device


def _combine(weights: tuple[float, ...], ks: list[Tensor]) -> Tensor | None:
    """sum_j w_j k_j over the nonzero weights (None when all are zero): one stacked
    product, as small tensors cost per operation rather than per element."""
    terms = [(w, k) for w, k in zip(weights, ks, strict=False) if w != 0.0]
    if not terms:
        return None
    if len(terms) == 1:
        return terms[0][0] * terms[0][1]
    key = (tuple(w for w, _ in terms), ks[0].dtype, ks[0].device)
    if key not in _WEIGHTS:
        _WEIGHTS[key] = torch.tensor(key[0], dtype=key[1], device=key[2])
    return torch.stack([k for _, k in terms], -1) @ _WEIGHTS[key]


EULER = ButcherTableau("euler", (0.0,), ((),), (1.0,), order=1)

MIDPOINT = ButcherTableau("midpoint", (0.0, 0.5), ((), (0.5,)), (0.0, 1.0), order=2)

# the classical fourth-order method (Hairer et al., Table II.1.2, left)
RK4_CLASSIC = ButcherTableau(
    "rk4", (0.0, 0.5, 0.5, 1.0), ((), (0.5,), (0.0, 0.5), (0.0, 0.0, 1.0)),
    (1 / 6, 1 / 3, 1 / 3, 1 / 6), order=4)

# Bogacki & Shampine (1989), "A 3(2) pair of Runge-Kutta formulas", Appl. Math. Lett. 2(4)
_BS_B = (2 / 9, 1 / 3, 4 / 9, 0.0)
_BS_B_HAT = (7 / 24, 1 / 4, 1 / 3, 1 / 8)
BOGACKI_SHAMPINE = ButcherTableau(
    "bosh3", (0.0, 0.5, 0.75, 1.0), ((), (0.5,), (0.0, 0.75), _BS_B[:3]), _BS_B, order=3,
    error=tuple(b - bh for b, bh in zip(_BS_B, _BS_B_HAT, strict=True)), error_order=2)

# Dormand & Prince (1980), "A family of embedded Runge-Kutta formulae", J. Comput. Appl.
# Math. 6(1), the 5(4) pair "DOPRI5" (Hairer et al., Table II.5.2)
_DP_B = (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84, 0.0)
_DP_B_HAT = (5179 / 57600, 0.0, 7571 / 16695, 393 / 640, -92097 / 339200, 187 / 2100, 1 / 40)
DORMAND_PRINCE = ButcherTableau(
    "dopri5", (0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0),
    ((), (1 / 5,), (3 / 40, 9 / 40), (44 / 45, -56 / 15, 32 / 9),
     (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
     (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656), _DP_B[:6]),
    _DP_B, order=5, error=tuple(b - bh for b, bh in zip(_DP_B, _DP_B_HAT, strict=True)),
    error_order=4,
    # the solution at the midpoint, Shampine (1986), "Some practical Runge-Kutta formulas",
    # Math. Comp. 46(173): with the quartic of ``dense_output``, a 4th-order interpolant
    mid=(6025192743 / 30085553152 / 2, 0.0, 51252292925 / 65400821598 / 2,
         -2691868925 / 45128329728 / 2, 187940372067 / 1594534317056 / 2,
         -1776094331 / 19743644256 / 2, 11237099 / 235043384 / 2))
