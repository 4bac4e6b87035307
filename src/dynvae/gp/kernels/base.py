"""Base class of state-space kernels: a stationary GP prior written as a linear SDE.

A kernel k(tau) of a stationary GP f(t) is represented by a linear time-invariant SDE
(Hartikainen and Sarkka 2010; Sarkka and Solin 2019, ch. 12)

    dz = F z dt + L dbeta,   E[dbeta dbeta^T] = Qc dt,   f(t) = H z(t),   z(t0) ~ N(0, Pinf)

so that k(tau) = H expm(F tau) Pinf H^T for tau >= 0. Hyperparameters are stored as
logarithms (``log_<name>``) so that they stay positive under unconstrained optimisation;
the positive value is exposed as a property of the same name.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import ClassVar, NamedTuple

import torch
from torch import Tensor, nn

from dynvae.errors import ConfigError
from dynvae.gaussian import symmetrize
from dynvae.sde.linear import LinearSDE
from dynvae.utils import broadcast_shapes


class StateSpace(NamedTuple):
    """The LTI SDE of a kernel: F (S, S), L (S, W), Qc (W, W), H (1, S), Pinf (S, S)."""

    F: Tensor
    L: Tensor
    Qc: Tensor
    H: Tensor
    Pinf: Tensor


class Kernel(nn.Module, ABC):
    """A stationary kernel with a state-space (linear SDE) representation.

    Subclasses implement :meth:`state_space`, :meth:`stationary_covariance` and
    ``state_dim``; they may override :meth:`transition_matrix` with a closed form.
    Parameters are float64 unless ``dtype`` says otherwise. ``batchable`` declares that
    :meth:`state_space` and :meth:`transition_matrix` run under ``torch.func.vmap`` over
    stacked hyperparameters of copies of the kernel (no ``.item()`` or data-dependent
    Python control flow), so that many copies can be discretised at once.
    """

    batchable: ClassVar[bool] = False

    def __init__(self, dtype: torch.dtype = torch.float64) -> None:
        super().__init__()
        self._dtype = dtype

    def register_positive(self, name: str, value: float, learnable: bool = True) -> None:
        """Store a positive hyperparameter as ``log_<name>`` (a Parameter or a fixed buffer)."""
        if not (value > 0 and math.isfinite(value)):
            raise ConfigError(f"{type(self).__name__}: {name} must be positive and finite, "
                              f"got {value}")
        raw = torch.tensor(math.log(value), dtype=self._dtype)
        if learnable:
            self.register_parameter(f"log_{name}", nn.Parameter(raw))
        else:
            self.register_buffer(f"log_{name}", raw)

    def positive(self, name: str) -> Tensor:
        return getattr(self, f"log_{name}").exp()

    @property
    @abstractmethod
    def state_dim(self) -> int:
        """S, the dimension of the SDE state."""

    @abstractmethod
    def state_space(self) -> StateSpace:
        """The kernel's SDE matrices (F, L, Qc, H, Pinf)."""

    @abstractmethod
    def stationary_covariance(self, tau: Tensor) -> Tensor:
        """k(tau) of the process the SDE represents, for lags tau of any shape."""

    def covariance(self, t1: Tensor, t2: Tensor) -> Tensor:
        """Dense Gram matrix k(t1_i, t2_j), (N, M), for times t1 (N,), t2 (M,)."""
        return self.stationary_covariance(t1[:, None] - t2[None, :])

    def transition_matrix(self, dt: Tensor) -> Tensor:
        """A = expm(F dt) for steps dt (*b,) -> (*b, S, S). Subclasses give closed forms."""
        F = self.state_space().F
        return torch.linalg.matrix_exp(F * dt[..., None, None])

    def discretize(self, dt: Tensor) -> tuple[Tensor, Tensor]:
        """Exact transition A = expm(F dt) and noise Q = Pinf - A Pinf A^T over steps dt
        (*b,) -> (*b, S, S) each, Q symmetric (Sarkka and Solin 2019, eq. 12.26). Sums and
        products override it with their block and Kronecker structure."""
        A = self.transition_matrix(dt)
        Pinf = self.state_space().Pinf
        return A, symmetrize(Pinf - A @ Pinf @ A.transpose(-1, -2))

    def sde(self) -> LinearSDE:
        """The kernel's SDE as a :class:`dynvae.sde.linear.LinearSDE`."""
        ss = self.state_space()
        return LinearSDE(ss.F, ss.L, ss.Qc)

    def hyperparameters(self) -> dict[str, float]:
        """Positive hyperparameter values by dotted name, e.g. ``{'kernels.0.lengthscale': 2}``."""
        out = {}
        for name, value in list(self.named_parameters()) + list(self.named_buffers()):
            head, _, last = name.rpartition(".")
            if last.startswith("log_"):
                key = (head + "." if head else "") + last[4:]
                out[key] = float(value.detach().exp())
        return out

    def __add__(self, other: Kernel) -> Kernel:
        from dynvae.gp.kernels.composite import Sum
        return Sum(self, other)

    def __mul__(self, other: Kernel) -> Kernel:
        from dynvae.gp.kernels.composite import Product
        return Product(self, other)

    @property
    def dtype(self) -> torch.dtype:
        return next(iter(list(self.parameters()) + list(self.buffers()))).dtype

    @property
    def device(self) -> torch.device:
        return next(iter(list(self.parameters()) + list(self.buffers()))).device


def block_diag(mats: list[Tensor]) -> Tensor:
    """Batched block-diagonal matrix from blocks (*b, s_i, w_i) -> (*b, sum s_i, sum w_i)."""
    batch = broadcast_shapes(*(m.shape[:-2] for m in mats))
    rows, cols = sum(m.shape[-2] for m in mats), sum(m.shape[-1] for m in mats)
    out = mats[0].new_zeros(*batch, rows, cols)
    r = c = 0
    for m in mats:
        out[..., r:r + m.shape[-2], c:c + m.shape[-1]] = m
        r, c = r + m.shape[-2], c + m.shape[-1]
    return out


def kron(X: Tensor, Y: Tensor) -> Tensor:
    """Batched Kronecker product (*b, m, n) (x) (*b, p, q) -> (*b, m p, n q)."""
    out = X[..., :, None, :, None] * Y[..., None, :, None, :]
    return out.reshape(*out.shape[:-4], X.shape[-2] * Y.shape[-2], X.shape[-1] * Y.shape[-1])
