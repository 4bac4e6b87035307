"""Sums and products of state-space kernels (Solin 2016, sec. 4.2; Sarkka and Solin 2019).

Sum: independent processes added, f = f_1 + f_2: block-diagonal F, L, Qc, Pinf and
concatenated H. Product: f = f_1 f_2 realised on the Kronecker state z_1 (x) z_2,
F = F_1 (x) I + I (x) F_2, H = H_1 (x) H_2, Pinf = Pinf_1 (x) Pinf_2,
A(dt) = A_1(dt) (x) A_2(dt), and noise L Qc L^T = N_1 (x) Pinf_2 + Pinf_1 (x) N_2 with
N_i = L_i Qc_i L_i^T (so L = I and W = S for products).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from dynvae.gp.kernels.base import Kernel, StateSpace, block_diag, kron


class Sum(Kernel):
    """k = k_1 + k_2 + ... (``k1 + k2`` builds one; nested sums are flattened)."""

    def __init__(self, *kernels: Kernel) -> None:
        super().__init__()
        flat = []
        for k in kernels:
            flat.extend(k.kernels if isinstance(k, Sum) else [k])
        self.kernels = nn.ModuleList(flat)

    @property
    def state_dim(self) -> int:
        return sum(k.state_dim for k in self.kernels)

    def state_space(self) -> StateSpace:
        parts = [k.state_space() for k in self.kernels]
        return StateSpace(block_diag([p.F for p in parts]), block_diag([p.L for p in parts]),
                          block_diag([p.Qc for p in parts]), torch.cat([p.H for p in parts], -1),
                          block_diag([p.Pinf for p in parts]))

    def transition_matrix(self, dt: Tensor) -> Tensor:
        return block_diag([k.transition_matrix(dt) for k in self.kernels])

    def discretize(self, dt: Tensor) -> tuple[Tensor, Tensor]:
        """Block-diagonal A and Q from the parts' own (cheaper than the dense formula, and
        exactly zero between parts)."""
        parts = [k.discretize(dt) for k in self.kernels]
        return block_diag([a for a, _ in parts]), block_diag([q for _, q in parts])

    def stationary_covariance(self, tau: Tensor) -> Tensor:
        return sum(k.stationary_covariance(tau) for k in self.kernels)


class Product(Kernel):
    """k = k_1 * k_2 (``k1 * k2`` builds one)."""

    def __init__(self, left: Kernel, right: Kernel) -> None:
        super().__init__()
        self.left, self.right = left, right

    @property
    def state_dim(self) -> int:
        return self.left.state_dim * self.right.state_dim

    def state_space(self) -> StateSpace:
        a, b = self.left.state_space(), self.right.state_space()
        eye_a = torch.eye(a.F.shape[-1], dtype=a.F.dtype, device=a.F.device)
        eye_b = torch.eye(b.F.shape[-1], dtype=b.F.dtype, device=b.F.device)
        noise_a, noise_b = a.L @ a.Qc @ a.L.T, b.L @ b.Qc @ b.L.T
        Qc = kron(noise_a, b.Pinf) + kron(a.Pinf, noise_b)
        eye = torch.eye(Qc.shape[-1], dtype=Qc.dtype, device=Qc.device)
        return StateSpace(kron(a.F, eye_b) + kron(eye_a, b.F), eye, Qc, kron(a.H, b.H),
                          kron(a.Pinf, b.Pinf))

    def transition_matrix(self, dt: Tensor) -> Tensor:
        return kron(self.left.transition_matrix(dt), self.right.transition_matrix(dt))

    def discretize(self, dt: Tensor) -> tuple[Tensor, Tensor]:
        """A = A_1 (x) A_2 and, with A_i P_i A_i^T = P_i - Q_i,
        Q = P_1 (x) P_2 - (P_1 - Q_1) (x) (P_2 - Q_2) = Q_1 (x) P_2 + P_1 (x) Q_2 - Q_1 (x) Q_2:
        Kronecker products of the parts' (small) matrices instead of S^3 products, and a
        noise-free factor (periodic, Q_2 = 0) leaves exactly Q_1 (x) P_2."""
        (A1, Q1), (A2, Q2) = self.left.discretize(dt), self.right.discretize(dt)
        P1, P2 = self.left.state_space().Pinf, self.right.state_space().Pinf
        Q = kron(Q1, P2.expand_as(Q2)) + kron(P1.expand_as(Q1), Q2) - kron(Q1, Q2)
        return kron(A1, A2), Q

    def stationary_covariance(self, tau: Tensor) -> Tensor:
        return self.left.stationary_covariance(tau) * self.right.stationary_covariance(tau)
