"""Diagonal diffusions of neural SDEs: one small network per latent coordinate."""

from __future__ import annotations

import math
import threading

import torch
from torch import Tensor, nn
from torch.nn.functional import softplus

from dynvae.errors import ConfigError

# Every tanh below is computed as tanh(u) = 2 sigmoid(2 u) - 1, with the factors folded
# into the parameters (tiny (H, Z) tensors): a = sum_k w2_k tanh(u_k) becomes
# sum_k (2 w2_k) sigmoid(2 w1_k z + 2 b1_k) - sum_k w2_k, and the slope's 1 - tanh^2 is
# 4 sigmoid (1 - sigmoid). Same function (float64 values agree to ~1e-16 per unit), but
# on CPU torch's tanh kernel costs about 5x its sigmoid (2.9 against 0.5 ms for 2^20
# float32 activations on one thread), and these activations are most of a neural SDE's
# step: the diffusion runs N Z H of them where the drift runs N x hidden.


def _sigmoids(z: Tensor, w1: Tensor, b1: Tensor, unit_dim: int) -> Tensor:
    """sigmoid(2 (w1 z + b1)), the units along ``unit_dim`` of z's unsqueezed shape."""
    return torch.sigmoid(torch.addcmul(b1 + b1, z.unsqueeze(unit_dim), w1, value=2.0))


# Two layouts of the N Z H activations. "units last": z (N, Z), parameters (Z, H),
# activations (N, Z, H), the parameters' own layout. "units middle": parameters
# transposed to (H, Z) and activations (N, H, Z), where every sum over the H units runs
# over a middle dimension and vectorises along Z (about 4x faster than summing over a
# last dimension of 16), which pays for the transposes on large inputs. ``units`` is
# the activations' unit dimension, -1 or -2; the parameters' is then -1 or 0.

def _param_units(units: int) -> int:
    return -1 if units == -1 else 0


_workspace = threading.local()


def _buffers(shape: torch.Size, z: Tensor, w: Tensor) -> tuple[Tensor, Tensor]:
    """Two activation-sized scratch tensors kept per thread for computations without
    gradients, so that a solve's steps reuse them: a fresh multi-MiB buffer each step
    is memory the allocator may hand back to the system and fault in again (measured:
    ~53,000 page faults in a 200-step Milstein solve at N 1024, Z 64, H 16)."""
    dtype = torch.promote_types(z.dtype, w.dtype)
    key = (tuple(shape), dtype, z.device)
    held = getattr(_workspace, "buffers", None)
    if held is None or held[0] != key:
        held = (key, torch.empty(shape, dtype=dtype, device=z.device),
                torch.empty(shape, dtype=dtype, device=z.device))
        _workspace.buffers = held
    return held[1], held[2]


def _activations(z: Tensor, w1: Tensor, b1: Tensor, w2: Tensor, units: int,
                 keep: bool) -> tuple[Tensor, Tensor, Tensor]:
    """(a, p, scratch): the layer's value a (N, Z), the sigmoids p and 2 w2 p, for z
    (N, Z) and parameters in the layout ``units`` names. ``keep``: p and scratch are
    fresh tensors (p kept for a backward); else both are this thread's workspace,
    reused by the next call."""
    if keep:
        p = torch.addcmul(b1 + b1, z.unsqueeze(units), w1, value=2.0).sigmoid_()
        scratch = p * (w2 + w2)
    else:
        shape = torch.broadcast_shapes(z.unsqueeze(units).shape, w1.shape)
        p, scratch = _buffers(shape, z, w1)
        torch.addcmul(b1 + b1, z.unsqueeze(units), w1, value=2.0, out=p).sigmoid_()
        torch.mul(p, w2 + w2, out=scratch)
    return scratch.sum(units).sub_(w2.sum(_param_units(units))), p, scratch


def _fused_forward(z: Tensor, w1: Tensor, b1: Tensor, w2: Tensor, units: int,
                   keep: bool) -> tuple[Tensor, Tensor, Tensor | None]:
    """(a, s, p): value and slope from one set of activations (:func:`_activations`);
    p is returned only when ``keep``."""
    a, p, scratch = _activations(z, w1, b1, w2, units, keep)
    # s = sum_k 4 w1_k w2_k p_k (1 - p_k): the scratch tensor 2 w2 p times (1 - p) in one
    # pass (no difference of two sums to cancel), times 2 w1, summed
    s = scratch.addcmul_(scratch, p, value=-1.0).mul_(w1 + w1).sum(units)
    return a, s, (p if keep else None)


class _TanhLayerAndSlope(torch.autograd.Function):
    """(a, s) of :func:`tanh_layer_and_slope` with a hand-written backward, in either
    layout (``units``). The forward keeps the sigmoids p alone. With u = 2 w1 z + 2 b1
    and c = 4 w1 w2, dL/dp = ga 2 w2 + gs c (1 - 2 p) and dL/du = dL/dp p (1 - p); s
    also depends on w1 and w2 through c. The backward runs in two activation-sized
    buffers and about half the operations autograd records for the same expressions.
    First derivatives only: a backward with create_graph=True raises, rather than give
    a gradient that silently lacks its second-order terms."""

    @staticmethod
    def forward(ctx, z, w1, b1, w2, units):               # z (N, Z)
        a, s, p = _fused_forward(z, w1, b1, w2, units, keep=True)
        ctx.save_for_backward(z, w1, w2, p)
        ctx.units = units
        return a, s

    @staticmethod
    def backward(ctx, grad_a, grad_s):
        if torch.is_grad_enabled():                      # create_graph=True
            raise ConfigError(
                "tanh_layer_and_slope's fused backward gives first derivatives only, and a "
                "backward with create_graph=True asks for more; set "
                "dynvae.nn.diffusion.FUSED_BACKWARD = False for the plain, "
                "twice-differentiable expressions")
        z, w1, w2, p = ctx.saved_tensors
        units = ctx.units
        ga = torch.zeros_like(z) if grad_a is None else grad_a              # (N, Z)
        gs = (torch.zeros_like(z) if grad_s is None else grad_s).unsqueeze(units)
        c = 4.0 * w1 * w2
        variance = torch.addcmul(p, p, p, value=-1.0)                       # p (1 - p)
        gu = gs * c
        gu.addcmul_(gu, p, value=-2.0).addcmul_(ga.unsqueeze(units), w2, value=2.0)
        gu.mul_(variance)                                                   # dL/du
        if ctx.needs_input_grad[1] or ctx.needs_input_grad[3]:
            # the slope's own dependence on w1 and w2 through c: 4 sum_n gs p (1 - p)
            direct = variance.mul_(gs).sum(0).mul_(4.0)                     # parameters'
        # u = 2 w1 z + 2 b1; a = sum_k w2_k (2 p_k - 1) gives w2 2 sum_n ga p - sum_n ga
        grads = [None, None, None, None, None]
        if ctx.needs_input_grad[0]:
            grads[0] = (gu * w1).sum(units).mul_(2.0)
        if ctx.needs_input_grad[1]:
            grads[1] = (gu * z.unsqueeze(units)).sum(0).mul_(2.0).addcmul_(direct, w2)
        if ctx.needs_input_grad[2]:
            grads[2] = gu.sum(0).mul_(2.0)
        if ctx.needs_input_grad[3]:
            grads[3] = (p * ga.unsqueeze(units)).sum(0).mul_(2.0).sub_(
                ga.sum(0).unsqueeze(units)).addcmul_(direct, w1)
        return tuple(grads)


# At or above this many activations (N Z H) the "units middle" layout (N, H, Z) is
# faster: the transposes cost a few dispatches each, more than they save on small
# tensors (measured crossover on one CPU thread: between Z = 4 and Z = 64 at N = 1024,
# H = 16).
TRANSPOSED_MIN_ELEMENTS = 1 << 18

# tanh_layer_and_slope's hand-written backward (first derivatives only, about 1.6x
# faster forward+backward at N = 1024, Z = 4, H = 16 than autograd on the same
# expressions). False: the plain autograd expressions, differentiable to any order.
FUSED_BACKWARD = True


def _transposed(z: Tensor, w1: Tensor) -> bool:
    """The (N, H, Z) layout: large inputs, in eager mode (under torch.compile the plain
    expressions are traced and fused anyway)."""
    return (z.numel() * w1.shape[-1] >= TRANSPOSED_MIN_ELEMENTS
            and not torch.compiler.is_compiling())


def _laid_out(z: Tensor, w1: Tensor, b1: Tensor, w2: Tensor
              ) -> tuple[tuple[Tensor, ...], int]:
    """((z (N, Z), w1, b1, w2) in the layout for this input size, its ``units``)."""
    flat = z.reshape(-1, z.shape[-1])
    if _transposed(z, w1):
        return (flat, *(p.t().contiguous() for p in (w1, b1, w2))), -2
    return (flat, w1, b1, w2), -1


def _needs_graph(*tensors: Tensor) -> bool:
    return torch.is_grad_enabled() and any(v.requires_grad for v in tensors)


def tanh_layer(z: Tensor, w1: Tensor, b1: Tensor, w2: Tensor) -> Tensor:
    """Per-coordinate tanh layers: a_i = sum_k w2_ik tanh(w1_ik z_i + b1_ik).

    z (..., Z) and parameters (Z, H) give a (..., Z): Z independent 1 -> H -> 1
    networks as one batched computation, each tanh computed as 2 sigmoid(2 u) - 1 (on
    CPU about 5x cheaper than torch's tanh). Large inputs run laid out (N, H, Z), where
    the sum over the H units vectorises along Z (a sum over a last dimension of 16 is
    about 4x slower); plain autograd operations either way, so the layer is
    differentiable to any order. The value equals :func:`tanh_layer_and_slope`'s first
    output.
    """
    if not (_needs_graph(z, w1, b1, w2) or torch.compiler.is_compiling()):
        # no graph: the activations in this thread's reused workspace
        args, units = _laid_out(z, w1, b1, w2)
        return _activations(*args, units, keep=False)[0].reshape(z.shape)
    if not _transposed(z, w1):
        p = _sigmoids(z, w1, b1, -1)                                        # (..., Z, H)
        return (p * (w2 + w2)).sum(-1) - w2.sum(-1)
    (flat, w1t, b1t, w2t), _ = _laid_out(z, w1, b1, w2)
    p = _sigmoids(flat, w1t, b1t, -2)                                       # (N, H, Z)
    return ((p * (w2t + w2t)).sum(-2) - w2t.sum(0)).reshape(z.shape)


def tanh_layer_and_slope(z: Tensor, w1: Tensor, b1: Tensor, w2: Tensor) -> tuple[Tensor, Tensor]:
    """Per-coordinate tanh layers and their derivatives, fused.

    With h_ik = tanh(w1_ik z_i + b1_ik) for z (..., Z) and parameters (Z, H), returns
    a_i = sum_k w2_ik h_ik (:func:`tanh_layer`) and its slope s_i = da_i/dz_i =
    sum_k w2_ik w1_ik (1 - h_ik^2), each (..., Z): the pre-activation of a diagonal
    diffusion and its derivative, from which Milstein's correction follows by the chain
    rule through the output activation. The activations are paid once (as sigmoids,
    1 - h^2 = 4 p (1 - p) with p = sigmoid(2 u)), in the (N, H, Z) layout for large
    inputs, with a hand-written backward (``_TanhLayerAndSlope``; ``FUSED_BACKWARD``).
    Differentiable once in every argument (to any order with ``FUSED_BACKWARD = False``
    or under torch.compile, which traces the plain expressions).
    """
    graph = _needs_graph(z, w1, b1, w2)
    if torch.compiler.is_compiling() or (graph and not FUSED_BACKWARD):
        p = _sigmoids(z, w1, b1, -1)                                        # (..., Z, H)
        a = (p * (w2 + w2)).sum(-1) - w2.sum(-1)
        return a, (torch.addcmul(p, p, p, value=-1.0) * (4.0 * w1 * w2)).sum(-1)
    args, units = _laid_out(z, w1, b1, w2)
    if graph:
        a, s = _TanhLayerAndSlope.apply(*args, units)
    else:
        with torch.no_grad():
            a, s, _ = _fused_forward(*args, units, keep=False)
    return a.reshape(z.shape), s.reshape(z.shape)


class DiagonalDiffusion(nn.Module):
    """g_i(z_i) = min_diffusion + softplus(w2_i . tanh(w1_i z_i + b1_i) + b2_i), i = 1..Z.

    Coordinate i depends on z_i only, as diagonal noise requires (so that Milstein's
    correction g_i dg_i/dz_i is the whole Ito-Stratonovich difference; Li et al. 2020
    use the same per-coordinate structure). The tanh layer keeps every g_i bounded and
    the floor keeps it away from 0, where the Girsanov integrand |(f_q - f_p) / g|^2
    would blow up. All Z networks run as one batched computation.
    """

    def __init__(self, latent_dim: int, hidden: int = 16, min_diffusion: float = 1e-3) -> None:
        super().__init__()
        if latent_dim < 1 or hidden < 1:
            raise ConfigError(f"latent_dim and hidden must be positive, got {latent_dim}, "
                              f"{hidden}")
        if not min_diffusion >= 0:
            raise ConfigError(f"min_diffusion must be >= 0, got {min_diffusion}")
        self.w1 = nn.Parameter(torch.randn(latent_dim, hidden))
        self.b1 = nn.Parameter(torch.randn(latent_dim, hidden) * 0.1)
        self.w2 = nn.Parameter(torch.randn(latent_dim, hidden) / math.sqrt(hidden))
        self.b2 = nn.Parameter(torch.zeros(latent_dim))
        self.min_diffusion = float(min_diffusion)

    def forward(self, z: Tensor) -> Tensor:
        """z (…, Z) -> g (…, Z), positive."""
        return softplus(tanh_layer(z, self.w1, self.b1, self.w2) + self.b2) + self.min_diffusion

    def value_and_derivative(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """z (…, Z) -> (g, dg_i/dz_i), each (…, Z), in one pass (what Milstein's
        correction needs): dg_i/dz_i = sigmoid(a_i) sum_k w2_ik (1 - h_ik^2) w1_ik with
        a_i = w2_i . h_i + b2_i, h_ik = tanh(w1_ik z_i + b1_ik)."""
        a, slope = tanh_layer_and_slope(z, self.w1, self.b1, self.w2)
        a = a + self.b2
        return softplus(a) + self.min_diffusion, torch.sigmoid(a) * slope
