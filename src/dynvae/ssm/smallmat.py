"""Two representations of batches of small matrices for the parallel Kalman combines.

A scan level applies one combine to a whole batch of tiny (S, S) matrices. The
combine formulas are written once against :class:`SmallLinalg`; two back ends
evaluate them:

* :class:`BatchedLinalg`: tensors (…, m, n) and ``torch.matmul`` /
  ``torch.linalg.solve``; any size, one library call per product.
* :class:`ScalarLinalg`: a matrix is a nested list ``[[t_00, t_01, …], …]`` of
  1-D tensors (N,), one per entry ("structure of arrays"), and the solve is
  Gauss-Jordan elimination with partial pivoting unrolled over the rows. Every
  operation is elementwise across the batch, so under ``torch.compile`` a whole
  combine fuses into one vectorised loop over N with no intermediate buffers.
  Meant for small S (say S <= 6): the graph grows as S^3.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import torch

Matrix = Any   # a tensor (…, m, n) or a nested list of (N,) tensors
Vector = Any   # a tensor (…, m) or a list of (N,) tensors


class SmallLinalg(ABC):
    """Products, sums and solves of batched small matrices and vectors."""

    @abstractmethod
    def mm(self, A: Matrix, B: Matrix) -> Matrix: ...

    @abstractmethod
    def mv(self, A: Matrix, v: Vector) -> Vector: ...

    @abstractmethod
    def solve(self, N: Matrix, rhs: Matrix) -> Matrix:
        """N^{-1} rhs for N (S, S) non-singular and rhs (S, n)."""

    @abstractmethod
    def t(self, A: Matrix) -> Matrix: ...

    @abstractmethod
    def add(self, A: Matrix, B: Matrix) -> Matrix: ...

    @abstractmethod
    def eye_plus(self, A: Matrix) -> Matrix:
        """I + A."""

    @abstractmethod
    def hcat(self, blocks: list[Matrix]) -> Matrix:
        """Concatenate matrices with equal row counts side by side."""

    @abstractmethod
    def as_column(self, v: Vector) -> Matrix: ...

    @abstractmethod
    def columns(self, X: Matrix, start: int, stop: int) -> Matrix: ...

    @abstractmethod
    def column(self, X: Matrix, j: int) -> Vector: ...

    @abstractmethod
    def dim(self, A: Matrix) -> int:
        """Number of columns."""

    def sub(self, A: Matrix, B: Matrix) -> Matrix:
        return self.add(A, self.scale(B, -1.0))

    @abstractmethod
    def scale(self, A: Matrix, c: float) -> Matrix: ...

    def sym(self, A: Matrix) -> Matrix:
        """0.5 (A + A^T): removes round-off asymmetry."""
        return self.scale(self.add(A, self.t(A)), 0.5)


class BatchedLinalg(SmallLinalg):
    """Tensors (…, m, n); torch.matmul / torch.linalg.solve."""

    def mm(self, A, B):
        return A @ B

    def mv(self, A, v):
        return (A @ v.unsqueeze(-1)).squeeze(-1)

    def solve(self, N, rhs):
        return torch.linalg.solve(N, rhs)

    def t(self, A):
        return A.transpose(-1, -2)

    def add(self, A, B):
        return A + B

    def scale(self, A, c):
        return A * c

    def eye_plus(self, A):
        return A + torch.eye(A.shape[-1], dtype=A.dtype, device=A.device)

    def hcat(self, blocks):
        return torch.cat(blocks, -1)

    def as_column(self, v):
        return v.unsqueeze(-1)

    def columns(self, X, start, stop):
        return X[..., start:stop]

    def column(self, X, j):
        return X[..., j]

    def dim(self, A):
        return A.shape[-1]


class ScalarLinalg(SmallLinalg):
    """Nested lists of (N,) tensors, one per entry; every operation is elementwise."""

    def mm(self, A, B):
        inner = range(len(B))
        return [[sum(row[k] * B[k][j] for k in inner) for j in range(len(B[0]))] for row in A]

    def mv(self, A, v):
        return [sum(a * b for a, b in zip(row, v, strict=True)) for row in A]

    def solve(self, N, rhs):
        S = len(N)
        rows = [list(N[i]) + list(rhs[i]) for i in range(S)]        # augmented [N | rhs]
        for k in range(S):
            # partial pivoting: bubble the row with the largest |entry| in column k up
            for i in range(k + 1, S):
                swap = rows[i][k].abs() > rows[k][k].abs()
                pairs = list(zip(rows[i], rows[k], strict=True))
                rows[k], rows[i] = ([torch.where(swap, a, b) for a, b in pairs],
                                    [torch.where(swap, b, a) for a, b in pairs])
            inv = 1.0 / rows[k][k]
            pivot = [e * inv for e in rows[k]]
            rows = [pivot if i == k else
                    [e - rows[i][k] * p for e, p in zip(rows[i], pivot, strict=True)]
                    for i in range(S)]
        return [r[S:] for r in rows]

    def t(self, A):
        return [list(col) for col in zip(*A, strict=True)]

    def add(self, A, B):
        if isinstance(A, list):
            return [self.add(a, b) for a, b in zip(A, B, strict=True)]
        return A + B

    def scale(self, A, c):
        return [self.scale(a, c) for a in A] if isinstance(A, list) else A * c

    def eye_plus(self, A):
        return [[a + 1.0 if i == j else a for j, a in enumerate(row)] for i, row in enumerate(A)]

    def hcat(self, blocks):
        return [sum((list(b[i]) for b in blocks), []) for i in range(len(blocks[0]))]

    def as_column(self, v):
        return [[e] for e in v]

    def columns(self, X, start, stop):
        return [row[start:stop] for row in X]

    def column(self, X, j):
        return [row[j] for row in X]

    def dim(self, A):
        return len(A[0])
