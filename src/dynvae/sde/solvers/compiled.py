"""A solver whose steps run through ``torch.compile``, several steps per graph.

Compilation traces the user's drift and diffusion together with the update, so the
elementwise work of a step (activations, the g dW product, the update) is fused into
few kernels, and ``steps_per_graph`` consecutive steps form one graph: one call
(and, under autograd, one backward node) per block instead of dozens of operator
dispatches per step. The first call of each distinct shape and grad mode pays the
compilation time (15 s to a minute on a 2-core CPU, longer for larger blocks); use it
for long or repeated solves.

A solve whose step count is not a multiple of the block pads its last block with
zero-length steps (h = 0, dW = 0), which leave the state unchanged, so every call
with the same batch, state and block size reuses one graph.
"""

from __future__ import annotations

import functools
import logging
import types
from dataclasses import dataclass, field

import torch
from torch import Tensor
from torch.utils.checkpoint import (
    CheckpointPolicy,
    checkpoint,
    create_selective_checkpoint_contexts,
)

from dynvae.errors import ConfigError
from dynvae.sde.solvers.base import Solver


@dataclass(frozen=True)
class Compiled(Solver):
    """Wraps a solver; same orders, calculus and noise types, compiled steps.

    inner: the solver to run. steps_per_graph: consecutive steps traced into one graph
    (1 compiles a single step; larger blocks cut per-call overhead and compile longer).
    mode: ``torch.compile`` mode (None for the default).
    recompute: under autograd, let the compiler recompute every activation it likes in
    the backward pass (least memory). The default keeps the results of matrix products
    and transcendental functions (tanh, sigmoid, exp, ...) from the forward pass, as
    eager autograd does, and recomputes only cheap elementwise work: faster when the
    networks' activations are dear (15-17% on a 64-dimensional neural SDE with tanh
    activations; alike once its diffusion's activations became sigmoids, docs/sde.md).
    """

    inner: Solver
    steps_per_graph: int = 8
    mode: str | None = None
    recompute: bool = False
    _compiled: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    strong_order = property(lambda self: self.inner.strong_order)
    weak_order = property(lambda self: self.inner.weak_order)
    sde_type = property(lambda self: self.inner.sde_type)
    noise_types = property(lambda self: self.inner.noise_types)
    strong_order_by_noise = property(lambda self: self.inner.strong_order_by_noise)
    needs_levy_area = property(lambda self: self.inner.needs_levy_area)

    def __post_init__(self):
        if not isinstance(self.inner, Solver) or isinstance(self.inner, Compiled):
            raise ConfigError(f"Compiled wraps a plain solver, got {self.inner!r}")
        k = self.steps_per_graph
        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            raise ConfigError(f"steps_per_graph must be a positive integer, got {k!r}")

    @property
    def steps_per_call(self) -> int:
        return self.steps_per_graph

    def _fn(self, name: str):
        """The compiled ``inner.<name>``, built on first use.

        torch.compile keeps its graphs (and its recompilation budget) on the function's
        code object, which every solver of a class shares; a private copy of the code
        gives each Compiled solver its own graphs and budget.
        """
        compiled = self._compiled.get(name)
        if compiled is None:
            fn = getattr(type(self.inner), name.removesuffix("_saving"))
            own = types.FunctionType(fn.__code__.replace(), fn.__globals__, fn.__name__,
                                     fn.__defaults__, fn.__closure__)
            target = types.MethodType(own, self.inner)
            if name.endswith("_saving"):
                target = functools.partial(_saving_expensive, target)
            compiled = torch.compile(target, mode=self.mode, dynamic=False)
            self._compiled[name] = compiled
        return compiled

    def step(self, sde, drift_cost, t0, t1, h, z, dW, H):
        if not isinstance(h, torch.Tensor):  # a tensor step avoids one graph per float value
            h = torch.tensor(h, dtype=z.dtype, device=z.device)
        return self._fn("step")(sde, drift_cost, t0, t1, h, z, dW, H)

    def advance(self, sde, drift_cost, ts: Tensor, hs: Tensor, z: Tensor, dW: Tensor,
                H: Tensor | None, cost: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """Up to ``steps_per_graph`` steps in one compiled call (see Solver.advance)."""
        n, k = dW.shape[0], self.steps_per_graph
        if n < k:  # pad with zero-length steps that leave z (and the cost) unchanged
            pad = k - n
            ts = torch.cat([ts, ts[-1:].expand(pad, *ts.shape[1:])])
            hs = torch.cat([hs, hs.new_zeros(pad, *hs.shape[1:])])
            dW = torch.cat([dW, dW.new_zeros(pad, *dW.shape[1:])])
            H = None if H is None else torch.cat([H, H.new_zeros(pad, *H.shape[1:])])
        H = None if H is None else H.contiguous()
        args = (sde, drift_cost, ts.contiguous(), hs.contiguous(), z, dW.contiguous(), H, cost)
        name = "advance" if self.recompute or not torch.is_grad_enabled() else "advance_saving"
        zs, costs = self._fn(name)(*args)
        return zs[:n], None if costs is None else costs[:n]

    def __repr__(self) -> str:
        return f"Compiled({self.inner!r}, steps_per_graph={self.steps_per_graph})"


_A = torch.ops.aten
# Forward results worth keeping for the backward pass: costly to recompute.
_EXPENSIVE = frozenset({
    _A.mm.default, _A.addmm.default, _A.bmm.default, _A.baddbmm.default,
    _A.tanh.default, _A.sigmoid.default, _A.exp.default, _A.log.default,
    _A.log1p.default, _A.expm1.default, _A.sin.default, _A.cos.default, _A.erf.default,
    _A.pow.Tensor_Scalar, _A.sqrt.default, _A.rsqrt.default,
})


def _keep_expensive(ctx, op, *args, **kwargs) -> CheckpointPolicy:
    return CheckpointPolicy.MUST_SAVE if op in _EXPENSIVE else CheckpointPolicy.PREFER_RECOMPUTE


def _saving_expensive(fn, *args):
    """fn(*args) with a selective-checkpoint policy that the compiler's partitioner
    follows: keep expensive results, recompute cheap elementwise ones.

    Run eagerly (torch.compile falling back to Python, e.g. past its recompilation
    limit), fn is called as it is: eager autograd keeps what it needs anyway, and an
    eager selective checkpoint would reject an in-place update of a kept result (a
    user's ``torch.sigmoid(z).add_(1)``) that the compiled graph handles."""
    if not torch.compiler.is_compiling():
        return fn(*args)
    return checkpoint(fn, *args, use_reentrant=False, context_fn=functools.partial(
        create_selective_checkpoint_contexts, _keep_expensive))


class _DropPolicyNotice(logging.Filter):
    """Drops torch's notice that a selective-checkpoint policy is in use under compile
    (it asks to avoid in-place operations in the region; the compiled graph is
    functionalised, and the eager fallback above does not checkpoint)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "context_fn is passed to torch.utils.checkpoint" not in record.getMessage()


logging.getLogger("torch._higher_order_ops.wrap").addFilter(_DropPolicyNotice())
