"""A solver whose step runs through ``torch.compile``.

Compilation traces the user's drift and diffusion together with the update, so the
elementwise work of a step (activations, the g dW product, the update) is fused into
few kernels. The first call of each distinct shape pays the compilation time; use it
for long or repeated solves.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from dynvae.sde.solvers.base import Solver


@dataclass(frozen=True)
class Compiled(Solver):
    """Wraps a solver; same orders, calculus and noise types, compiled step.

    inner: the solver to run. mode: ``torch.compile`` mode (None for the default).
    """

    inner: Solver
    mode: str | None = None
    _compiled: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    strong_order = property(lambda self: self.inner.strong_order)
    weak_order = property(lambda self: self.inner.weak_order)
    sde_type = property(lambda self: self.inner.sde_type)
    noise_types = property(lambda self: self.inner.noise_types)
    strong_order_by_noise = property(lambda self: self.inner.strong_order_by_noise)
    needs_levy_area = property(lambda self: self.inner.needs_levy_area)

    def step(self, sde, drift_cost, t0, t1, h, z, dW, H):
        fn = self._compiled.get("step")
        if fn is None:
            fn = torch.compile(self.inner.step, mode=self.mode, dynamic=False)
            self._compiled["step"] = fn
        if not isinstance(h, torch.Tensor):  # a tensor step avoids one graph per float value
            h = torch.tensor(h, dtype=z.dtype, device=z.device)
        return fn(sde, drift_cost, t0, t1, h, z, dW, H)

    def __repr__(self) -> str:
        return f"Compiled({self.inner!r})"
