"""Gradients of ``sdeint`` in memory independent of the number of solver steps.

The stochastic adjoint of Li et al. (2020, "Scalable gradients for stochastic
differential equations", sec. 3) walks back from the end of a solve, rebuilding the
path backwards in time from the same Brownian noise and propagating the adjoint
a = dL/dz with vector-Jacobian products. ``Adjoint`` does this for the discretised
solve itself: going back over step n (z_n -> z_{n+1} = Phi_n(z_n, dW_n, H_n)),

1. z_n is rebuilt from z_{n+1} by the fixed-point iteration
       z <- z - (Phi_n(z) - z_{n+1}),   started at z = z_{n+1},
   a contraction when the step is small (Phi_n(z) = z + O(h + |dW|)): its rate is
   about L (h + |dW|) per iteration. It stops when the residual is at the rounding
   floor (``rtol``) and raises if it does not contract;
2. a_n = a_{n+1} dPhi_n/dz and dL/dtheta += a_{n+1} dPhi_n/dtheta, one vjp of the step.

The noise of step n is read again from the solve's ``StepNoise`` (keyed draws or a
``BrownianTree``), so nothing per step is stored: memory is the states at the
recorded (observation) steps, which are outputs anyway, plus one step's graph. States
at recorded steps are exact restarts for the reconstruction, so its error never
carries across observation times. The result equals backpropagation through the
solver up to the reconstruction residual; as h -> 0 both tend to the gradient of the
continuous model, which Li et al.'s adjoint SDE discretises directly.

The vector fields may use tensors other than z (network weights, an encoder's
contexts): they must be listed in ``params`` (an ``nn.Module`` SDE's own parameters
are found by default). Any other tensor requiring grad that the step depends on is an
error rather than a silently missing gradient.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from dynvae.errors import ConfigError, DataError
from dynvae.sde.gradients import Backprop, Gradients
from dynvae.sde.stepping import StepRun


@dataclass(frozen=True, eq=False)
class Adjoint(Gradients):
    """The discrete stochastic adjoint (module docstring).

    params: the tensors the drift and diffusion depend on (None: the SDE's parameters
    if it is an ``nn.Module``). upstream: for each of ``params``, the tensor its
    gradient is handed on to (default: itself). Give the SDE a detached copy of a tensor
    computed upstream (an encoder's contexts) in ``params`` and the original here: each
    step's vector-Jacobian product then stops at the copy instead of walking the whole
    upstream graph, which would cost O(its size) per step. rtol: reconstruction
    residual, relative to 1 + |z| (None: 64 machine epsilons of the state's dtype).
    max_iters: fixed-point iterations allowed per step.
    """

    params: Sequence[Tensor] | None = None
    upstream: Sequence[Tensor] | None = None
    rtol: float | None = None
    max_iters: int = 30

    def __post_init__(self) -> None:
        if self.params is not None and not all(isinstance(p, Tensor) for p in self.params):
            raise ConfigError("Adjoint.params must be a sequence of tensors")
        if self.upstream is not None and (
                self.params is None or len(self.upstream) != len(self.params)
                or any(u.shape != p.shape for u, p in zip(self.upstream, self.params,
                                                       strict=True))):
            raise ConfigError("Adjoint.upstream must give one tensor of the same shape for "
                              "each of Adjoint.params")
        if self.rtol is not None and not self.rtol > 0:
            raise ConfigError(f"Adjoint.rtol must be positive, got {self.rtol!r}")
        if not isinstance(self.max_iters, int) or self.max_iters < 1:
            raise ConfigError(f"Adjoint.max_iters must be a positive integer, got "
                              f"{self.max_iters!r}")

    def parameters_of(self, run: StepRun) -> tuple[Tensor, ...]:
        if self.params is not None:
            return tuple(self.params)
        if isinstance(run.sde, nn.Module):
            return tuple(p for p in run.sde.parameters() if p.requires_grad)
        return ()

    def solve(self, run, z0, cost0):
        params = self.parameters_of(run)
        sources = params if self.upstream is None else tuple(self.upstream)
        wants = z0.requires_grad or any(p.requires_grad for p in (*params, *sources))
        if not torch.is_grad_enabled() or not wants:
            return Backprop().solve(run, z0, cost0)
        # The solve runs here, not in Function.forward, where forward-mode AD (which
        # solvers may use for derivatives of the diffusion) is switched off.
        with torch.no_grad():
            zs, costs = Backprop().solve(run, z0.detach(),
                                         None if cost0 is None else cost0.detach())
        solved = (zs, costs)
        if cost0 is None:
            return _AdjointSolve.apply(run, self, params, solved, z0, None, *sources)[0], None
        return _AdjointSolve.apply(run, self, params, solved, z0, cost0, *sources)


class _AdjointSolve(torch.autograd.Function):
    """Forward: hands out the states (S, B, Z) and costs (S, B, C) or None of the solve
    done without a graph. Backward: the reverse walk."""

    @staticmethod
    def forward(ctx, run: StepRun, opts: Adjoint, params: tuple, solved: tuple, z0: Tensor,
                cost0: Tensor | None, *param_inputs: Tensor):
        zs, costs = solved
        ctx.run, ctx.opts, ctx.params, ctx.has_cost = run, opts, params, cost0 is not None
        ctx.save_for_backward(zs)
        return zs, (costs if costs is not None else zs.new_zeros(0))

    @staticmethod
    def backward(ctx, grad_zs: Tensor, grad_costs: Tensor):
        (zs,) = ctx.saved_tensors
        a_z, a_c, grads = _reverse_walk(ctx.run, ctx.opts, ctx.params, zs, grad_zs,
                                        grad_costs if ctx.has_cost else None)
        return (None, None, None, None, a_z, a_c, *grads)


def _reverse_walk(run: StepRun, opts: Adjoint, params: tuple, zs: Tensor, grad_zs: Tensor,
                  grad_costs: Tensor | None) -> tuple[Tensor, Tensor | None, list]:
    """Adjoints of z0 (B, Z), cost0 (B, C) and params from the recorded states zs
    (S, B, Z) and the loss gradients at them (grad_zs (S, B, Z), grad_costs (S, B, C))."""
    slot = {i: s for s, i in enumerate(run.recorded)}
    a_z = torch.zeros_like(zs[0])
    a_c = None if grad_costs is None else torch.zeros_like(grad_costs[0])
    totals: list[Tensor | None] = [None] * len(params)
    z_next, checked = zs[-1], False
    rtol = opts.rtol if opts.rtol is not None else 64 * torch.finfo(zs.dtype).eps
    n = run.n_steps
    while n > 0:
        start = max(0, n - run.noise.chunk)
        dW_block, H_block = run.noise.block(start, n)
        for i in range(n - 1, start - 1, -1):
            s = slot.get(i + 1)
            if s is not None:  # a recorded state: exact restart, and its loss gradient
                z_next, a_z = zs[s], a_z + grad_zs[s]
                a_c = None if a_c is None else a_c + grad_costs[s]
            dW, H = dW_block[i - start], None if H_block is None else H_block[i - start]
            s0 = slot.get(i)
            z, out = _rebuild(run, i, z_next, dW, H, rtol, opts.max_iters,
                              None if s0 is None else zs[s0])
            if not checked:
                _check_inputs(out, z, params)
                checked = True
            a_z = _vjp(run, i, z, out, a_z, a_c, params, totals)
            z_next = z.detach()
        n = start
    a_z = a_z + grad_zs[0]
    a_c = None if a_c is None else a_c + grad_costs[0]
    grads = [torch.zeros_like(p) if g is None else g for p, g in zip(params, totals, strict=True)]
    return a_z, a_c, grads


def _rebuild(run: StepRun, i: int, z_next: Tensor, dW: Tensor, H: Tensor | None, rtol: float,
             max_iters: int, known: Tensor | None) -> tuple[Tensor, tuple]:
    """z_i (B, Z) with Phi_i(z_i) = z_next, as a leaf requiring grad, and the step's
    outputs (z_{i+1}, cost increment or None) computed from it with a graph."""
    scale = 1.0 + float(z_next.abs().max())
    previous = float("inf")
    z = (z_next if known is None else known).detach()
    for _ in range(max_iters):
        z = z.detach().requires_grad_(True)
        with torch.enable_grad():
            out = run.step(i, z, dW, H)
        if known is not None:
            return z, out
        size = float((out[0].detach() - z_next).abs().max())
        if size <= rtol * scale or (size > 0.25 * previous and size <= 1e3 * rtol * scale):
            return z, out  # converged, or stalled at the rounding floor
        if not size < previous:  # diverging (or NaN)
            break
        previous = size
        z = z.detach() - (out[0].detach() - z_next)
    t = float(run.times[:, i].max())
    raise DataError(f"Adjoint: rebuilding the state before step {i} (t = {t:.6g}) from the "
                    f"state after it did not converge (residual {size:.3g}); the step is too "
                    f"large for the reverse pass: lower dt")


def _vjp(run: StepRun, i: int, z: Tensor, out: tuple, a_z: Tensor, a_c: Tensor | None,
         params: tuple, totals: list) -> Tensor:
    """a_z dPhi_i/dz (+ a_c d(cost increment)/dz), accumulating parameter gradients."""
    z1, dc = out
    outputs, cotangents = [z1], [a_z]
    if dc is not None and a_c is not None:
        outputs.append(dc)
        cotangents.append(a_c)
    inputs = [z, *(p for p in params if p.requires_grad)]
    grads = torch.autograd.grad(outputs, inputs, cotangents, allow_unused=True)
    a_new = a_z if grads[0] is None else grads[0]
    if not torch.isfinite(a_new).all():
        t = float(run.times[:, i].max())
        raise DataError(f"Adjoint: the adjoint became non-finite at step {i} (t = {t:.6g})")
    it = iter(grads[1:])
    for k, p in enumerate(params):
        if p.requires_grad:
            g = next(it)
            if g is not None:
                totals[k] = g if totals[k] is None else totals[k] + g
    return a_new


def _check_inputs(out: tuple, z: Tensor, params: tuple) -> None:
    """Raise if the step depends on a tensor requiring grad that is neither z nor in
    ``params`` (its gradient would be lost)."""
    known = {id(p) for p in params} | {id(z)}
    stops = {p.grad_fn for p in params if p.grad_fn is not None}
    seen, stack, missing = set(), [t.grad_fn for t in out if t is not None], []
    while stack:
        node = stack.pop()
        if node is None or node in seen or node in stops:
            continue
        seen.add(node)
        variable = getattr(node, "variable", None)
        if variable is not None and id(variable) not in known:
            missing.append(tuple(variable.shape))
        stack.extend(next_node for next_node, _ in node.next_functions)
    if missing:
        raise ConfigError(f"Adjoint: the SDE depends on {len(missing)} tensor(s) requiring "
                          f"grad that are not in Adjoint(params=...), shapes "
                          f"{missing[:5]}; list them so that their gradients are computed")
