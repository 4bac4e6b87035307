"""Closed forms for the Girsanov KL between two Ornstein-Uhlenbeck path measures.

Posterior Q: dz = -b z dt + sigma dW, prior P: dz = -a z dt + sigma dW, z(0) = z0 fixed.
u = (f_q - f_p) / sigma = (a - b) z / sigma, so KL(Q || P) on [0, T] is
(a - b)^2 / (2 sigma^2) int_0^T E_Q[z_t^2] dt, with the exact OU second moment
E_Q[z_t^2] = z0^2 exp(-2 b t) + sigma^2 (1 - exp(-2 b t)) / (2 b).
"""

from __future__ import annotations

import math


def ou_second_moment_integral(b: float, sigma: float, z0: float, T: float) -> float:
    """int_0^T E[z_t^2] dt for dz = -b z dt + sigma dW from z0."""
    decay = (1.0 - math.exp(-2.0 * b * T)) / (2.0 * b)      # int_0^T exp(-2 b t) dt
    return z0 ** 2 * decay + sigma ** 2 / (2.0 * b) * (T - decay)


def ou_path_kl(a: float, b: float, sigma: float, z0: float, T: float) -> float:
    """KL(Q || P) of the two OU path measures on [0, T]."""
    return 0.5 * (a - b) ** 2 / sigma ** 2 * ou_second_moment_integral(b, sigma, z0, T)


def ou_path_kl_euler(a: float, b: float, sigma: float, z0: float, T: float, n: int) -> float:
    """Expectation of the Euler-Maruyama estimate sum_k 1/2 u(z_k)^2 h with n steps, from
    the exact second moments of the Euler chain z_{k+1} = (1 - b h) z_k + sigma dW_k."""
    h, m2, total = T / n, z0 ** 2, 0.0
    for _ in range(n):
        total += m2 * h
        m2 = (1.0 - b * h) ** 2 * m2 + sigma ** 2 * h
    return 0.5 * (a - b) ** 2 / sigma ** 2 * total
