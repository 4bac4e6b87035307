"""A Brownian motion that stores nothing: any query is answered again identically.

``BrownianTree`` is a virtual Brownian tree (Gaines & Lyons 1997, "Variable step size
control in the numerical solution of stochastic differential equations"; Li et al.
2020, "Scalable gradients for stochastic differential equations", sec. 4): the
interval [t0, t1] is bisected ``depth`` times, and the increment dW and space-time
Levy area H of every dyadic node are drawn from their exact law given the node's
parent, with random numbers that are a pure function of (seed, node, batch row). So
W(s) for any s is computed by walking from the root to the leaf that holds s, and a
query asked twice, or in reverse order (the adjoint's backward pass), or for a
subset of the rows, returns the same numbers. Only the walk's current root-to-leaf
path is kept: memory O(depth) = O(log((t1 - t0) / tol)) per batch row.

A node [a, b] of length h holds dW = W(b) - W(a) and H = (1/h) int_a^b (W(r) - W(a)) dr
- dW / 2 (independent, N(0, h) and N(0, h / 12)). Splitting it at a + p h (q = 1 - p)
into pieces (dW1, H1), (dW2, H2) whose law given (dW, H) is (derived by Gaussian
conditioning from dW = dW1 + dW2, H = p H1 + q H2 + (q dW1 - p dW2) / 2):

    dW1 = p dW + 6 p q H + sqrt(h p q (1 - 3 p q)) Z1
    S   = H - q dW1 / 2 + p (dW - dW1) / 2            (= p H1 + q H2)
    H1  = p^2 S / (p^3 + q^3) + sqrt(h p q^3 / (12 (p^3 + q^3))) Z2,   H2 = (S - p H1) / q

with Z1, Z2 standard normal (p = 1/2 gives Foster's midpoint rule: dW1 = dW / 2 +
3 H / 2 + sqrt(h) Z1 / 4, H1 = S + sqrt(h / 48) Z2). Inside a leaf (length <= tol) the
value at a query time is drawn from the same conditional law given the leaf alone,
with random numbers keyed by the query time: increments between times in different
leaves have exactly the law of Brownian motion (with their Levy areas); two times
closer than tol inside one leaf are treated as conditionally independent given it.

The random numbers come from a counter-based generator: the splitmix64 finaliser
(Steele, Lea & Flood 2014, "Fast splittable pseudorandom number generators") hashes
(seed, node, row, coordinate pair) to 64 bits, two 32-bit uniforms that the
Box-Muller transform turns into two normals.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from dynvae.errors import DataError
from dynvae.sde.brownian import BrownianMotion

_MASK64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15  # 2^64 / golden ratio, the splitmix64 stream increment
_POINT_TAG = 0x5DEECE66D  # keys the draws at query times apart from the tree's nodes


def _signed(x: int) -> int:
    x &= _MASK64
    return x - (1 << 64) if x >= 1 << 63 else x


_M1, _M2, _G = _signed(0xBF58476D1CE4E5B9), _signed(0x94D049BB133111EB), _signed(_GOLDEN)


def _shift_right(x: Tensor, k: int) -> Tensor:
    """Logical right shift of int64 (torch's >> is arithmetic)."""
    return (x >> k) & ((1 << (64 - k)) - 1)


def _mix(x: Tensor) -> Tensor:
    """splitmix64 finaliser on int64 tensors (multiplications wrap modulo 2^64)."""
    x = (x ^ _shift_right(x, 30)) * _M1
    x = (x ^ _shift_right(x, 27)) * _M2
    return x ^ _shift_right(x, 31)


def _mix_int(x: int) -> int:
    """The same finaliser on a Python integer, as a signed 64-bit value."""
    x &= _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return _signed(x ^ (x >> 31))


def hashed_normals(keys: Tensor, rows: Tensor, n: int) -> Tensor:
    """Standard normals that are a pure function of (key, row, coordinate).

    keys: (R,) int64 with R = 1 or R = len(rows); rows: (B,) int64 row identities.
    Returns (B, n) float64: one 64-bit hash per pair of coordinates, split into two
    32-bit uniforms and mapped by the Box-Muller transform.
    """
    m = (n + 1) // 2
    k = _mix(keys.reshape(-1, 1) + (rows.reshape(-1, 1) + 1) * _G)              # (B, 1)
    cols = torch.arange(1, m + 1, dtype=torch.int64, device=keys.device) * _G
    bits = _mix(k + cols)                                                         # (B, m)
    u1 = (_shift_right(bits, 32).to(torch.float64) + 0.5) * 2.0 ** -32           # (0, 1)
    angle = (bits & 0xFFFFFFFF).to(torch.float64) * (2.0 ** -32 * 2.0 * math.pi)
    radius = torch.sqrt(-2.0 * torch.log(u1))
    return torch.cat([radius * torch.cos(angle), radius * torch.sin(angle)], -1)[:, :n]


def split(dw: Tensor, area: Tensor, h: float, p: Tensor | float, z1: Tensor, z2: Tensor
          ) -> tuple[Tensor, Tensor, Tensor]:
    """(dW1, H1, S) of the piece [a, a + p h] of a node (dW, H) of length h given the
    node (module docstring); H2 = (S - p H1) / q. dw, area, z1, z2 (B, W); p a float
    or (R, 1) in [0, 1]."""
    q = 1.0 - p
    pq = p * q
    cubes = p ** 3 + q ** 3
    sd_dw = _sqrt(h * pq * (1.0 - 3.0 * pq))
    sd_area = _sqrt(h * p * q ** 3 / (12.0 * cubes))
    dw1 = p * dw + 6.0 * pq * area + sd_dw * z1
    s = area - 0.5 * q * dw1 + 0.5 * p * (dw - dw1)
    return dw1, (p * p / cubes) * s + sd_area * z2, s


def _sqrt(x: Tensor | float) -> Tensor | float:
    return x.clamp_min(0).sqrt() if isinstance(x, Tensor) else math.sqrt(max(x, 0.0))


class BrownianTree(BrownianMotion):
    """Brownian motion on [t0, t1] with batch shape (*batch, W), answered from a seed.

    tol: length of the tree's leaves is at most tol (default (t1 - t0) / 2^20):
    increments between query times in different leaves have the exact joint law.
    Each new query walks down from the deepest node it shares with the previous one,
    so queries at nearby times (a solver's steps) cost a few node splits each.
    dtype/device: of the returned values (the tree computes in float64). seed, or
    generator to draw one from (default: the global torch generator).
    """

    def __init__(self, t0: float, t1: float, shape: Sequence[int], *, tol: float | None = None,
                 dtype: torch.dtype = torch.float64, device: torch.device | str | None = None,
                 seed: int | None = None, generator: torch.Generator | None = None):
        t0, t1 = float(t0), float(t1)
        if not (math.isfinite(t0) and math.isfinite(t1) and t1 > t0):
            raise DataError(f"BrownianTree needs finite t0 < t1, got t0={t0}, t1={t1}")
        shape = tuple(int(s) for s in shape)
        if len(shape) < 1 or min(shape) < 1:
            raise DataError(f"shape must be (*batch, W) with positive sizes, got {shape}")
        span = t1 - t0
        tol = span / 2 ** 20 if tol is None else float(tol)
        if not (math.isfinite(tol) and tol > 0):
            raise DataError(f"tol must be a positive number, got {tol}")
        self.t0, self.t1, self.shape, self.dtype = t0, t1, shape, dtype
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.depth = min(48, max(0, math.ceil(math.log2(span / tol))))
        if seed is None:
            seed = int(torch.randint(0, 2 ** 62, (), generator=generator))
        self.seed = int(seed)
        self._rows = torch.arange(math.prod(shape[:-1]), device=self.device)     # (B,)
        self._W = shape[-1]
        # keys of the nodes of each level: _mix(level key + index * golden)
        self._level_keys = [_mix_int(_mix_int(self.seed) + (level + 1) * _GOLDEN)
                            for level in range(self.depth + 2)]
        self._point_key = _mix_int(_mix_int(self.seed) ^ _POINT_TAG)
        self._path: list[tuple[Tensor, Tensor, Tensor, Tensor, Tensor]] = []
        self._leaf: Tensor | None = None
        self._last_point: tuple[Tensor, Tensor, Tensor] | None = None

    # ---------------------------------------------------------------- queries
    def increments(self, t: Tensor) -> tuple[Tensor, Tensor]:
        q = self._prepare(t)                                                    # (R, N)
        w, k = self._cumulative(q)                                              # (B, N, W)
        dw = torch.diff(w, dim=1)
        h = torch.diff(q, dim=-1).unsqueeze(-1)               # (R, N-1, 1)
        integral = torch.diff(k, dim=1) - h * w[:, :-1]   # int_a^b (W(r) - W(a)) dr
        safe_h = torch.where(h > 0, h, torch.ones_like(h))
        area = torch.where(h > 0, integral / safe_h - 0.5 * dw, torch.zeros_like(dw))
        out = (*self.shape[:-1], q.shape[-1] - 1, self._W)
        return dw.to(self.dtype).reshape(out), area.to(self.dtype).reshape(out)

    def value(self, t: Tensor) -> Tensor:
        q = self._prepare(t)
        w, _ = self._cumulative(q)
        return w.to(self.dtype).reshape(*self.shape[:-1], q.shape[-1], self._W)

    def rows(self, index: Tensor | Sequence[int]) -> BrownianTree:
        """The tree of the given rows of a tree with batch shape (B,): the same numbers."""
        if len(self.shape) != 2:
            raise DataError("rows() needs a tree with shape (B, W)")
        index = torch.as_tensor(index, dtype=torch.long, device=self.device).reshape(-1)
        new = BrownianTree.__new__(BrownianTree)
        new.__dict__.update(self.__dict__)
        new.shape = (int(index.numel()), self._W)
        new._rows = self._rows[index]
        new._path, new._leaf, new._last_point = [], None, None
        return new

    def _time_dtype(self) -> torch.dtype:
        return torch.float64   # the answer at a time must not depend on the output dtype

    @property
    def cached_nodes(self) -> int:
        """Number of tree nodes held in memory (at most depth + 1)."""
        return len(self._path)

    # --------------------------------------------------------------- internals
    def _cumulative(self, q: Tensor) -> tuple[Tensor, Tensor]:
        """W(s) - W(t0) and int_{t0}^s (W(r) - W(t0)) dr at times q (R, N): (B, N, W)."""
        w, k = zip(*(self._cached_point(q[:, i]) for i in range(q.shape[-1])), strict=True)
        return torch.stack(w, 1), torch.stack(k, 1)

    def _cached_point(self, s: Tensor) -> tuple[Tensor, Tensor]:
        """_point(s), reusing the last answer when asked at the same times again (a
        solver's consecutive steps share their end and start)."""
        last = self._last_point
        if last is not None and last[0].shape == s.shape and torch.equal(last[0], s):
            return last[1], last[2]
        w, k = self._point(s)
        self._last_point = (s, w, k)
        return w, k

    def _normals(self, key: int, index: Tensor) -> tuple[Tensor, Tensor]:
        z = hashed_normals(key + index * _G, self._rows, 2 * self._W)
        return z[:, :self._W], z[:, self._W:]                                    # (B, W) x 2

    def _point(self, s: Tensor) -> tuple[Tensor, Tensor]:
        """(W(s), K(s)) for one time per row, s (R,): each (B, W)."""
        span, L = self.t1 - self.t0, self.depth
        leaf = ((s - self.t0) / span * 2.0 ** L).floor().long().clamp(0, 2 ** L - 1)  # (R,)
        self._descend(leaf)
        _, w_a, k_a, dw, area = self._path[L]
        h = span / 2 ** L
        p = ((s - self.t0 - leaf.to(s) * h) / h).clamp(0.0, 1.0).unsqueeze(-1)       # (R, 1)
        z1, z2 = self._normals(self._point_key, s.contiguous().view(torch.int64))
        dw1, h1, _ = split(dw, area, h, p, z1, z2)
        return w_a + dw1, k_a + p * h * (w_a + h1 + 0.5 * dw1)

    def _descend(self, leaf: Tensor) -> None:
        """Make self._path the root-to-leaf path of the leaves ``leaf`` (R,)."""
        L = self.depth
        start = 0
        if self._leaf is not None:
            differ = int((leaf ^ self._leaf).max())   # highest differing bit: first new level
            start = L + 1 if differ == 0 else L + 1 - differ.bit_length()
        if not self._path:
            zero = torch.zeros(self._rows.shape[0], self._W, dtype=torch.float64,
                               device=self.device)
            root = torch.zeros(1, dtype=torch.int64, device=self.device)
            z1, z2 = self._normals(self._level_keys[0], root)
            span = self.t1 - self.t0
            self._path = [(root, zero, zero, z1 * math.sqrt(span), z2 * math.sqrt(span / 12))]
            start = 1
        del self._path[max(start, 1):]
        for level in range(max(start, 1), L + 1):
            self._path.append(self._child(level, leaf >> (L - level)))
        self._leaf = leaf

    def _child(self, level: int, index: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """Node ``index`` (R,) of ``level`` from its parent, the last node on the path."""
        parent, w_a, k_a, dw, area = self._path[-1]
        h = (self.t1 - self.t0) / 2 ** (level - 1)                               # parent length
        z1, z2 = self._normals(self._level_keys[level], parent)
        dw1, h1, s = split(dw, area, h, 0.5, z1, z2)
        right = (index & 1).bool().unsqueeze(-1)                                 # (R, 1)
        w_right = w_a + dw1
        k_right = k_a + 0.5 * h * (w_a + h1 + 0.5 * dw1)
        return (index, torch.where(right, w_right, w_a), torch.where(right, k_right, k_a),
                torch.where(right, dw - dw1, dw1), torch.where(right, 2.0 * s - h1, h1))
