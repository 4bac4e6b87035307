"""Batched linear algebra back ends for the combine steps of the parallel Kalman scan.

A scan level applies one combine to a whole batch of tiny (S, S) matrices. Two
interchangeable back ends provide the three products it needs:

* :class:`BatchedLinalg` calls ``torch.matmul`` and ``torch.linalg.solve`` (any S).
* :class:`UnrolledLinalg` writes products as broadcast multiply-and-sum and the solve
  as Gauss-Jordan elimination with partial pivoting unrolled over the S rows, so that
  every operation is elementwise across the batch. Under ``torch.compile`` a whole
  combine then fuses into one loop over the batch; meant for small S (say S <= 8).
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import Tensor


class SmallLinalg(ABC):
    """Products and solves of batched small matrices (…, m, n)."""

    @abstractmethod
    def mm(self, A: Tensor, B: Tensor) -> Tensor:
        """(…, m, k) @ (…, k, n) -> (…, m, n)."""

    @abstractmethod
    def mv(self, A: Tensor, v: Tensor) -> Tensor:
        """(…, m, k) @ (…, k) -> (…, m)."""

    @abstractmethod
    def solve(self, N: Tensor, rhs: Tensor) -> Tensor:
        """N^{-1} rhs for N (…, S, S) non-singular and rhs (…, S, n)."""


class BatchedLinalg(SmallLinalg):
    """torch.matmul / torch.linalg.solve: any size, one library call per product."""

    def mm(self, A: Tensor, B: Tensor) -> Tensor:
        return A @ B

    def mv(self, A: Tensor, v: Tensor) -> Tensor:
        return (A @ v.unsqueeze(-1)).squeeze(-1)

    def solve(self, N: Tensor, rhs: Tensor) -> Tensor:
        return torch.linalg.solve(N, rhs)


class UnrolledLinalg(SmallLinalg):
    """Elementwise formulations, fusible by torch.compile; cost grows as S^3 kernels."""

    def mm(self, A: Tensor, B: Tensor) -> Tensor:
        return (A.unsqueeze(-1) * B.unsqueeze(-3)).sum(-2)

    def mv(self, A: Tensor, v: Tensor) -> Tensor:
        return (A * v.unsqueeze(-2)).sum(-1)

    def solve(self, N: Tensor, rhs: Tensor) -> Tensor:
        S = N.shape[-1]
        rows = [torch.cat((N[..., i, :], rhs[..., i, :]), -1) for i in range(S)]  # (…, S+n)
        for k in range(S):
            # partial pivoting: bubble the row with the largest |entry| in column k up
            for i in range(k + 1, S):
                swap = (rows[i][..., k].abs() > rows[k][..., k].abs()).unsqueeze(-1)
                rows[k], rows[i] = (torch.where(swap, rows[i], rows[k]),
                                    torch.where(swap, rows[k], rows[i]))
            pivot_row = rows[k] / rows[k][..., k:k + 1]
            rows = [pivot_row if i == k else rows[i] - rows[i][..., k:k + 1] * pivot_row
                    for i in range(S)]
        return torch.stack([r[..., S:] for r in rows], -2)
