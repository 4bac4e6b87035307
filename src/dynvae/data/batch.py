"""The one data type every model consumes: :class:`SequenceBatch`."""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import Tensor

from dynvae.errors import DataError
from dynvae.timegrid import check_time_grid


@dataclass(frozen=True)
class SequenceBatch:
    """A padded batch of (possibly irregular, partly observed) sequences.

    Attributes:
        x: (B, T, D) values; missing and padded entries hold 0, never NaN.
        mask: (B, T, D) bool, True where ``x`` is observed.
        t: (B, T) observation times, strictly increasing over ``[:lengths[b]]``.
        lengths: (B,) int64 number of valid time steps of each sequence.
        u: optional (B, T, U) control inputs (known at every valid step).
        frame_shape: optional (C, H, W) when each step is an image frame. Frames are
            stored flat, ``x[b, t]`` = ``frame.reshape(C * H * W)`` in C-major (row-major)
            order, so D = C * H * W and every model, loss and mask works on them
            unchanged; :meth:`frames` gives the (B, T, C, H, W) view. The mask is per
            pixel; a whole missing frame is a frame whose pixels are all False.
    """

    x: Tensor
    mask: Tensor
    t: Tensor
    lengths: Tensor
    u: Tensor | None = None
    frame_shape: tuple[int, int, int] | None = None

    def __post_init__(self) -> None:
        validate_batch(self)

    # ----------------------------------------------------------------- shape
    @property
    def batch_size(self) -> int:
        return self.x.shape[0]

    @property
    def n_steps(self) -> int:
        return self.x.shape[1]

    @property
    def dim(self) -> int:
        return self.x.shape[2]

    @property
    def valid(self) -> Tensor:
        """(B, T) bool, True on the valid (non-padded) steps."""
        steps = torch.arange(self.n_steps, device=self.x.device)
        return steps[None, :] < self.lengths[:, None]

    def frames(self, values: Tensor | None = None) -> Tensor:
        """(B, T, C, H, W) view of ``values`` (B, T, D) (default x; e.g. the mask or a
        prediction's mean) for a batch with a frame shape."""
        if self.frame_shape is None:
            raise DataError("this batch has no frame shape (C, H, W): its steps are vectors")
        values = self.x if values is None else values
        return values.reshape(*values.shape[:2], *self.frame_shape)

    def n_observed(self) -> Tensor:
        """(B,) number of observed entries of each sequence."""
        return self.mask.sum(dim=(1, 2))

    # ------------------------------------------------------------- transform
    def to(self, device=None, dtype=None) -> SequenceBatch:
        """Move to ``device``; floating tensors (x, t, u) are cast to ``dtype``."""
        def cast(v: Tensor | None) -> Tensor | None:
            return None if v is None else v.to(device=device, dtype=dtype)
        return SequenceBatch(
            x=cast(self.x),
            mask=self.mask.to(device=device),
            t=cast(self.t),
            lengths=self.lengths.to(device=device),
            u=cast(self.u),
            frame_shape=self.frame_shape,
        )

    def with_mask(self, mask: Tensor) -> SequenceBatch:
        """The same batch with a new mask; newly hidden entries are zeroed."""
        return replace(self, x=torch.where(mask, self.x, torch.zeros_like(self.x)), mask=mask)

    def index(self, idx) -> SequenceBatch:
        """Select sequences along the batch axis (int list, slice or bool tensor)."""
        return SequenceBatch(
            x=self.x[idx], mask=self.mask[idx], t=self.t[idx], lengths=self.lengths[idx],
            u=None if self.u is None else self.u[idx], frame_shape=self.frame_shape,
        )

    @staticmethod
    def from_tensor(
        x: Tensor, t: Tensor | None = None, u: Tensor | None = None
    ) -> SequenceBatch:
        """Build a batch from a dense (B, T, D) tensor where NaN marks missing, or from
        frames (B, T, C, H, W) (stored flat, with their frame shape).

        ``t`` may be (T,) shared or (B, T); it defaults to 0, 1, ..., T-1.
        """
        frame_shape = None
        if x.ndim == 5:
            frame_shape = tuple(x.shape[2:])
            x = x.reshape(*x.shape[:2], -1)
        if x.ndim != 3:
            raise DataError(f"x must have shape (B, T, D), got {tuple(x.shape)}")
        if not torch.is_floating_point(x):
            x = x.to(torch.get_default_dtype())
        B, T, _ = x.shape
        mask = ~torch.isnan(x)
        infinite = torch.isinf(x)
        if infinite.any():
            b, k, d = (int(i) for i in infinite.nonzero()[0])
            raise DataError(f"x has an inf value at sequence {b}, step {k}, feature {d}: "
                            "mark a missing value with NaN")
        if t is not None:
            t = torch.as_tensor(t)
            if t.shape not in ((T,), (B, T)):
                raise DataError(f"t must have shape ({T},) or ({B}, {T}) for x of shape "
                                f"{tuple(x.shape)}, got {tuple(t.shape)}")
        if t is None:
            t = torch.arange(T, dtype=x.dtype, device=x.device).expand(B, T)
        elif t.ndim == 1:
            t = t.to(x).expand(B, T)
        lengths = torch.full((B,), T, dtype=torch.long, device=x.device)
        return SequenceBatch(
            x=torch.nan_to_num(x, nan=0.0), mask=mask, t=t.to(x).contiguous(), lengths=lengths,
            u=u, frame_shape=frame_shape,
        )


def validate_batch(batch: SequenceBatch) -> None:
    """Raise :class:`DataError` naming the first problem found in ``batch``."""
    x, mask, t, lengths, u = batch.x, batch.mask, batch.t, batch.lengths, batch.u
    if x.ndim != 3:
        raise DataError(f"x must have shape (B, T, D), got {tuple(x.shape)}")
    if batch.frame_shape is not None:
        object.__setattr__(batch, "frame_shape", check_frame_shape(batch.frame_shape,
                                                                   x.shape[2]))
    B, T, _ = x.shape
    if not torch.is_floating_point(x):
        raise DataError(f"x must be a floating tensor, got dtype {x.dtype}")
    if mask.shape != x.shape:
        raise DataError(f"mask shape {tuple(mask.shape)} != x shape {tuple(x.shape)}")
    if mask.dtype != torch.bool:
        raise DataError(f"mask must be bool, got {mask.dtype}")
    if t.shape != (B, T):
        raise DataError(f"t must have shape (B, T) = {(B, T)}, got {tuple(t.shape)}")
    if lengths.shape != (B,):
        raise DataError(f"lengths must have shape (B,) = ({B},), got {tuple(lengths.shape)}")
    if u is not None and (u.ndim != 3 or u.shape[:2] != (B, T)):
        raise DataError(f"u must have shape (B, T, U) with B, T = {(B, T)}, got {tuple(u.shape)}")
    if torch.isnan(x).any():
        raise DataError("x contains NaN: missing entries must be 0 with mask=False "
                        "(use SequenceBatch.from_tensor to convert NaN to a mask)")
    if torch.isinf(x).any():
        raise DataError("x contains inf values")
    if (lengths < 1).any() or (lengths > T).any():
        raise DataError(f"lengths must lie in [1, T={T}], got {lengths.tolist()}")
    valid = torch.arange(T, device=x.device)[None, :] < lengths[:, None]
    if (mask & ~valid[..., None]).any():
        raise DataError("mask is True beyond a sequence's length")
    check_time_grid(t, name="t", lengths=lengths)
    empty = ~mask.any(dim=(1, 2))
    if empty.any():
        raise DataError(f"sequence(s) {empty.nonzero().flatten().tolist()} have no observed value")
    if u is not None and not torch.isfinite(u[valid]).all():
        raise DataError("u contains NaN or inf within a sequence's length")


def check_frame_shape(frame_shape, dim: int) -> tuple[int, int, int]:
    """``frame_shape`` as a (C, H, W) tuple of positive ints with C * H * W == ``dim``;
    DataError otherwise."""
    shape = tuple(frame_shape)
    if len(shape) != 3 or any(isinstance(s, bool) or int(s) != s or s < 1 for s in shape):
        raise DataError(f"frame_shape must be three positive integers (C, H, W), got {shape}")
    shape = tuple(int(s) for s in shape)
    if shape[0] * shape[1] * shape[2] != dim:
        raise DataError(f"frame_shape {shape} has {shape[0] * shape[1] * shape[2]} pixels, "
                        f"the data has D={dim} features")
    return shape
