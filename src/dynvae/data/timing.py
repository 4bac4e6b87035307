"""How irregular the time stamps of a dataset are.

Each sequence is compared with the regular grid of its own step dt (:func:`grid_step`:
the median step, or the smallest step where the median is a multiple of it and nearly
every step too, as when more than half of an hourly record is missing): a step of
length Delta counts round(Delta / dt) grid steps; the grid points that no row falls on
are *absent* (gaps), and a step whose length is not close to a whole number of grid
steps is *off the grid* (irregular stamps). Data is called irregular when more than
1 % of the grid points are absent or more than 5 % of the steps are off the grid: a
discrete-time model then treats unequal intervals as equal steps.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass

import numpy as np

from dynvae.data.batch import SequenceBatch
from dynvae.data.dataset import SequenceDataset

ABSENT_LIMIT = 0.01     # share of absent grid points above which the data is irregular
OFF_GRID_LIMIT = 0.05   # share of steps off the grid above which the data is irregular
GRID_TOLERANCE = 0.1    # a step within 10 % of a whole number of grid steps is on the grid


@dataclass(frozen=True)
class TimeIrregularity:
    """Measured irregularity of time stamps.

    median_step: median over sequences of each sequence's grid step (time units;
        :func:`grid_step`: its median step unless that is a multiple of a smaller grid).
    absent_share: grid points inside the sequences' spans that hold no row, as a share
        of all grid points.
    off_grid_share: share of steps not within 10 % of a whole number of grid steps.
    largest_gap: the longest step, in median steps of its sequence.
    n_steps: number of steps measured.
    """

    median_step: float
    absent_share: float
    off_grid_share: float
    largest_gap: float
    n_steps: int

    @property
    def irregular(self) -> bool:
        return self.absent_share > ABSENT_LIMIT or self.off_grid_share > OFF_GRID_LIMIT

    def as_dict(self) -> dict:
        return {**asdict(self), "irregular": self.irregular}

    def describe(self) -> str:
        """One line for messages, e.g. "step 1, 28.1% of grid points absent
        (largest gap 4 steps), 0.0% of steps off the grid"."""
        return (f"step {self.median_step:.4g}, {100 * self.absent_share:.1f}% of "
                f"grid points absent (largest gap {self.largest_gap:.3g} steps), "
                f"{100 * self.off_grid_share:.1f}% of steps off the grid")


ON_BASE_SHARE = 0.95    # share of steps that must be whole multiples of a smaller grid step
MAX_BASE_RATIO = 20.0   # ... whose median step is at most this many grid steps


def grid_step(steps: np.ndarray) -> float:
    """The step of the grid that the positive ``steps`` of one sequence lie on: their
    median, or their smallest step b when the median is 1.5 b to 20 b and at least 95%
    of the steps are within a tenth of b of a whole multiple of b. Hourly readings with 60% of
    the hours dropped have a median step of 2 h and lie on the 1-hour grid; regularly
    spaced or randomly timed steps keep their median."""
    steps = np.asarray(steps, dtype=np.float64)
    median = float(np.median(steps))
    base = float(steps.min())
    if not (base > 0 and 1.5 * base <= median <= MAX_BASE_RATIO * base):
        return median
    ratio = steps / base
    # within a tenth of one grid step of a whole number of them (not a tenth of the
    # step's own length, which random times far longer than the smallest would pass)
    on_grid = np.abs(ratio - np.round(ratio)) <= GRID_TOLERANCE
    return base if on_grid.mean() >= ON_BASE_SHARE else median


def irregularity_of_times(times: Iterable[np.ndarray]) -> TimeIrregularity:
    """Measure the irregularity of the time stamps of several sequences, each (T,)
    strictly increasing; one-step sequences carry no information and are skipped."""
    medians, grid_steps, n_rows, off, largest, n = [], 0.0, 0, 0, 1.0, 0
    for t in times:
        steps = np.diff(np.asarray(t, dtype=np.float64))
        if steps.size == 0:
            continue
        dt = grid_step(steps)
        ratio = steps / dt
        whole = np.maximum(np.round(ratio), 1.0)
        medians.append(dt)
        grid_steps += float(whole.sum())
        n_rows += steps.size
        off += int((np.abs(ratio - whole) > GRID_TOLERANCE * whole).sum())
        largest = max(largest, float(ratio.max()))
        n += steps.size
    if n == 0:
        return TimeIrregularity(1.0, 0.0, 0.0, 1.0, 0)
    return TimeIrregularity(float(np.median(medians)), (grid_steps - n_rows) / grid_steps,
                            off / n, largest, n)


def time_irregularity(data: SequenceDataset | SequenceBatch) -> TimeIrregularity:
    """:func:`irregularity_of_times` of a SequenceDataset or a SequenceBatch."""
    if isinstance(data, SequenceDataset):
        return irregularity_of_times(s.t for s in data.sequences)
    t = data.t.detach().double().cpu().numpy()
    lengths = data.lengths.cpu().numpy()
    return irregularity_of_times(t[b, :int(n)] for b, n in enumerate(lengths))
