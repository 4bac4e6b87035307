"""Time stamps for the discrete-time deep models (DKF, VRNN): a one-time warning when the
times are irregular, and the time gap as an extra input feature.

A discrete-time model takes one transition per row, so unequal intervals look equal to
it. With ``time_gap_input=True`` the model sees g_t = log(dt_t / s) as one more input
channel at every step, dt_t = t_t - t_{t-1} (g_0 = 0), s the median step of the first
batch it is given (kept with the model's state); a regular series gives g = 0
everywhere, a gap of k steps log k.
"""

from __future__ import annotations

import warnings
from dataclasses import replace

import torch
from torch import Tensor, nn

from dynvae.data.batch import SequenceBatch
from dynvae.data.timing import time_irregularity
from dynvae.models.common import check_future, last_valid

CHECKED_BATCHES = 20   # batches checked for irregular times before the check stops


class TimeGapFeature(nn.Module):
    """Appends the time-gap feature g (module docstring) to a model's inputs."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("scale", torch.tensor(float("nan"), dtype=torch.float64))

    def _gaps(self, t: Tensor, first: Tensor | None = None) -> Tensor:
        """log(dt / scale) of times t (B, T), with g = 0 at the first step (or, given
        ``first`` (B,), the step from it to t[:, 0])."""
        prev = t[:, :1] if first is None else first[:, None].to(t)
        dt = torch.diff(t, dim=1, prepend=prev)
        if first is None:
            dt[:, 0] = float(self.scale)
        return torch.log(dt.clamp_min(1e-12 * float(self.scale)) / float(self.scale))

    def batch(self, batch: SequenceBatch) -> SequenceBatch:
        """``batch`` with g appended to u (B, T, U + 1); g = 0 on padding."""
        if torch.isnan(self.scale):
            steps = torch.diff(batch.t.double(), dim=1)[batch.valid[:, 1:]]
            self.scale.fill_(float(steps.median()) if steps.numel() else 1.0)
        g = torch.where(batch.valid, self._gaps(batch.t.double()), 0.0).to(batch.x)
        u = g[..., None] if batch.u is None else torch.cat([batch.u, g[..., None]], -1)
        return replace(batch, u=u)

    def future(self, t_last: Tensor, t_future: Tensor, u: Tensor | None) -> Tensor:
        """Inputs (B, H, U + 1) at the forecast times t_future (B, H) after t_last (B,)."""
        g = self._gaps(t_future.double(), t_last.double())[..., None]
        return g if u is None else torch.cat([u, g.to(u)], -1)

    def future_steps(self, batch: SequenceBatch, t_future: Tensor, u_future: Tensor | None,
                     input_dim: int) -> tuple[Tensor, Tensor]:
        """Steps (B, H) = 1..H (one transition per forecast time, any spacing: its gap is
        an input) and the inputs (B, H, U + 1) at t_future (B, H) after each sequence's
        last valid time; ``u_future`` (B, H, U) as the model's data inputs."""
        check_future(batch, t_future, u_future, input_dim)
        t_last = last_valid(batch.t[..., None], batch.lengths)[:, 0]            # (B,)
        B, H = t_future.shape
        k = torch.arange(1, H + 1, device=t_future.device).expand(B, H)
        return k, self.future(t_last, t_future, u_future)

    def sample(self, t: Tensor, u: Tensor | None, n: int) -> Tensor:
        """Inputs (n, T, U + 1) for sampling at times t (T,)."""
        g = self._gaps(t.double()[None]).expand(n, -1)[..., None]
        return g if u is None else torch.cat([u, g.to(u)], -1)


def input_width(input_dim: int, time_gap_input: bool) -> int:
    """Inputs the networks see: the data's U plus the gap feature when it is on."""
    return input_dim + int(time_gap_input)


def warn_if_irregular(model: nn.Module, batch: SequenceBatch) -> None:
    """Warn once per model when ``batch``'s times are irregular (dynvae.data.timing)."""
    seen = getattr(model, "_time_checks", 0)
    if seen >= CHECKED_BATCHES:
        return
    model._time_checks = seen + 1
    irregularity = time_irregularity(batch)
    if irregularity.irregular:
        model._time_checks = CHECKED_BATCHES
        warnings.warn(f"{type(model).__name__} is a discrete-time model (one transition "
                      f"per row) and these times are irregular ({irregularity.describe()}); "
                      "--set time_gap_input=true gives it the time gaps as an input",
                      stacklevel=3)


def with_time_gaps(model: nn.Module, batch: SequenceBatch, gaps: TimeGapFeature | None
                   ) -> SequenceBatch:
    """The batch a discrete-time model runs on: with the gap feature appended when it
    has one (``gaps``), else unchanged after the irregularity check."""
    if gaps is None:
        warn_if_irregular(model, batch)
        return batch
    return gaps.batch(batch)
