"""The noise of a solve's steps, handed out block by block and reproducibly.

A solve on a step grid reads its Brownian increments dW (and space-time Levy areas H
where the solver needs them) through a ``StepNoise``: ``block(start, stop)`` returns
the noise of steps start..stop-1, and asking again for any block, in any order,
returns the same numbers. That is what lets the adjoint's backward pass walk the
steps in reverse and checkpointed blocks recompute their steps, without keeping the
noise of the whole solve in memory.

``DrawnNoise`` draws the steps' noise in chunks of consecutive steps, chunk c from a
generator seeded by (seed, c): memory of one chunk, and a block costs its share of
a plain ``torch.randn``. ``PathNoise`` reads it from a ``BrownianMotion`` (a stored
``BrownianPath`` or a ``BrownianTree``) on the step grid.

Shapes: dW and H are (n, B, W) for a block of n steps; step sizes hs (R, N) with
R = 1 for a shared grid and R = B for per-sequence grids.
"""

from __future__ import annotations

import abc
import math

import torch
from torch import Tensor

from dynvae.errors import DataError
from dynvae.sde.brownian import BrownianMotion
from dynvae.sde.brownian_tree import _mix_int

CHUNK_ELEMENTS = 1 << 20  # numbers drawn at a time (4 MiB in float32)


class StepNoise(abc.ABC):
    """Noise of steps 0..n_steps-1; ``levy``: whether H is returned; ``chunk``: how many
    steps a block should cover to read the noise efficiently."""

    n_steps: int
    levy: bool
    chunk: int

    @abc.abstractmethod
    def block(self, start: int, stop: int) -> tuple[Tensor, Tensor | None]:
        """(dW (n, B, W), H (n, B, W) or None) of steps start..stop-1."""


class DrawnNoise(StepNoise):
    """Independent N(0, h) increments (and N(0, h / 12) areas), chunk c of ``chunk``
    steps drawn from a generator seeded by (seed, c).

    hs: (R, N) step sizes. B, W: batch rows and noise dimension. seed: an integer.
    """

    def __init__(self, hs: Tensor, B: int, W: int, levy: bool, seed: int) -> None:
        self.n_steps, self.levy, self.seed = int(hs.shape[-1]), bool(levy), int(seed)
        self._B, self._W = B, W
        self._sqrt_h = hs.t().clamp_min(0).sqrt().unsqueeze(-1)              # (N, R, 1)
        self.chunk = max(1, CHUNK_ELEMENTS // (B * W * (2 if levy else 1)))
        self._cached: tuple[int, Tensor, Tensor | None] | None = None

    def _chunk(self, c: int) -> tuple[Tensor, Tensor | None]:
        if self._cached is not None and self._cached[0] == c:
            return self._cached[1], self._cached[2]
        start, stop = c * self.chunk, min(self.n_steps, (c + 1) * self.chunk)
        sqrt_h = self._sqrt_h[start:stop]
        gen = torch.Generator(device=sqrt_h.device)
        gen.manual_seed(_mix_int(self.seed + 0x9E3779B97F4A7C15 * (c + 1)) & (2 ** 63 - 1))
        shape = (stop - start, self._B, self._W)
        # scaled in place: one chunk-sized buffer each, not two
        dW = torch.randn(shape, generator=gen, dtype=sqrt_h.dtype,
                         device=sqrt_h.device).mul_(sqrt_h)
        H = None
        if self.levy:
            H = torch.randn(shape, generator=gen, dtype=sqrt_h.dtype,
                            device=sqrt_h.device).mul_(sqrt_h / math.sqrt(12.0))
        self._cached = (c, dW, H)
        return dW, H

    def block(self, start: int, stop: int) -> tuple[Tensor, Tensor | None]:
        pieces = []
        for c in range(start // self.chunk, (stop - 1) // self.chunk + 1):
            dW, H = self._chunk(c)
            lo, hi = max(start, c * self.chunk) - c * self.chunk, min(stop, (c + 1) * self.chunk)
            hi -= c * self.chunk
            pieces.append((dW[lo:hi], None if H is None else H[lo:hi]))
        if len(pieces) == 1:
            return pieces[0]
        dW = torch.cat([p[0] for p in pieces])
        return dW, (torch.cat([p[1] for p in pieces]) if self.levy else None)


class PathNoise(StepNoise):
    """Increments of a BrownianMotion on the step grid.

    bm: shape (*batch, W). times: (R, N + 1) step times. batch_shape: the solve's
    batch shape (*batch). levy: whether H is returned.
    """

    def __init__(self, bm: BrownianMotion, times: Tensor, batch_shape: tuple, W: int,
                 levy: bool) -> None:
        if not isinstance(bm, BrownianMotion) or bm.shape != (*batch_shape, W):
            raise DataError(f"bm must be a BrownianMotion of shape {(*batch_shape, W)}, got "
                            f"{getattr(bm, 'shape', type(bm).__name__)}")
        self.bm, self.times, self.levy = bm, times, bool(levy)
        self.n_steps = int(times.shape[-1]) - 1
        self._batch_shape, self._W = batch_shape, W
        B = math.prod(batch_shape)
        self.chunk = max(1, CHUNK_ELEMENTS // (B * W * 2))

    def block(self, start: int, stop: int) -> tuple[Tensor, Tensor | None]:
        grid = self.times[:, start:stop + 1]
        grid = grid[0] if grid.shape[0] == 1 else grid.reshape(*self._batch_shape, -1)
        dW, H = self.bm.increments(grid)                                     # (*batch, n, W)
        dtype = self.times.dtype
        dW = dW.reshape(-1, stop - start, self._W).to(dtype).transpose(0, 1)
        H = H.reshape(-1, stop - start, self._W).to(dtype).transpose(0, 1) if self.levy else None
        return dW, H


def make_noise(bm: BrownianMotion | None, times: Tensor, batch_shape: tuple, W: int,
               levy: bool, generator: torch.Generator | None) -> StepNoise:
    """PathNoise from ``bm`` if given, else DrawnNoise seeded from ``generator`` (or
    from the global torch generator)."""
    if bm is not None:
        return PathNoise(bm, times, batch_shape, W, levy)
    device = generator.device if generator is not None else times.device
    seed = int(torch.randint(0, 2 ** 62, (), generator=generator, device=device))
    return DrawnNoise(torch.diff(times, dim=-1), math.prod(batch_shape), W, levy, seed)
