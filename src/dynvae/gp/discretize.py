"""Discretisation of a state-space kernel on irregular time grids, and the GP as an LGSSM.

For a stationary kernel SDE started at N(0, Pinf), the exact transition over a step dt is
A = expm(F dt) (each kernel gives a closed form where one is cheaper) and
Q = Pinf - A Pinf A^T (Sarkka and Solin 2019, eq. 12.26), which needs no integral; sums and
products assemble both from their parts' (:meth:`Kernel.discretize`).
"""

from __future__ import annotations

import torch
from torch import Tensor

from dynvae.gp.kernels.base import Kernel
from dynvae.ssm.model import LinearGaussianSSM
from dynvae.timegrid import check_time_grid


def discretize(kernel: Kernel, dt: Tensor) -> tuple[Tensor, Tensor]:
    """Exact transition matrices and noise covariances for steps dt.

    Args: kernel: a state-space kernel.  dt: (*b,) step lengths >= 0 (any batch shape).
    Returns: A (*b, S, S) and symmetric Q (*b, S, S).
    """
    return kernel.discretize(dt)


def gp_state_space_model(kernels: list[Kernel], t: Tensor, noise_variance: Tensor
                         ) -> LinearGaussianSSM:
    """The LGSSM of independent GP outputs observed with Gaussian noise at times t.

    Output d has prior kernels[d] and noise variance noise_variance[d]; the outputs are a
    leading batch axis D of the model (x is then passed as (D, T, 1)). All kernels must
    share one state dim S. Transition entry k maps z(t_{k-1}) to z(t_k); entry 0 is unused.

    Args: kernels: D kernels.  t: (T,) strictly increasing times.  noise_variance: (D,).
    Returns: LinearGaussianSSM with initial (D, S), transition (D, T, S, S), emission (D, 1, S).
    """
    check_time_grid(t, name="times", ndim=1)
    dt = torch.diff(t, prepend=t[:1])                                   # (T,), dt[0] = 0
    parts = [(discretize(k, dt), k.state_space()) for k in kernels]
    A = _stack([a for (a, _), _ in parts])                              # (D, T, S, S)
    Q = _stack([q for (_, q), _ in parts])                              # (D, T, S, S)
    Pinf = _stack([ss.Pinf for _, ss in parts])                         # (D, S, S)
    H = _stack([ss.H for _, ss in parts])                               # (D, 1, S)
    return LinearGaussianSSM(
        initial_mean=Pinf.new_zeros(Pinf.shape[:-1]), initial_cov=Pinf,
        transition_matrix=A, transition_cov=Q, emission_matrix=H,
        emission_cov=noise_variance.reshape(-1, 1, 1).to(Pinf),
        time_varying={"transition_matrix", "transition_cov"})


def _stack(tensors: list[Tensor]) -> Tensor:
    """torch.stack, without a copy for a single output (the common case)."""
    return tensors[0].unsqueeze(0) if len(tensors) == 1 else torch.stack(tensors)
