"""Per-feature moments of observed values, accumulated in one streaming pass.

Chan, Golub & LeVeque (1979), "Updating formulae and a pairwise algorithm for computing
sample variances": two sets of (count n, mean m, sum of squared deviations M2) merge as

    n = n_a + n_b,   delta = m_b - m_a,   m = m_a + delta n_b / n,
    M2 = M2_a + M2_b + delta^2 n_a n_b / n,

so a table of any size is summarised batch by batch in float64 with the accuracy of a
two-pass computation, and the moments of any set of sequences follow from theirs alone.
NaN entries are missing and ignored. The population standard deviation sqrt(M2 / n)
is the one :class:`~dynvae.data.dataset.Standardizer` fits in memory.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dynvae.errors import DataError


@dataclass
class Moments:
    """count (D,) int64 observed entries, mean (D,) and m2 (D,) float64 per feature."""

    count: np.ndarray
    mean: np.ndarray
    m2: np.ndarray

    @classmethod
    def empty(cls, dim: int) -> Moments:
        return cls(np.zeros(dim, np.int64), np.zeros(dim), np.zeros(dim))

    @classmethod
    def of(cls, x: np.ndarray) -> Moments:
        """Moments of the observed entries of ``x`` (N, D), two-pass within the block."""
        x = np.asarray(x, dtype=np.float64)
        observed = ~np.isnan(x)
        count = observed.sum(axis=0)
        with np.errstate(over="ignore", invalid="ignore"):
            mean = np.where(observed, x, 0.0).sum(axis=0) / np.maximum(count, 1)
            m2 = np.where(observed, (x - mean) ** 2, 0.0).sum(axis=0)
        return cls(count.astype(np.int64), mean, m2)

    def merge(self, other: Moments) -> Moments:
        """The moments of both sets together (Chan et al. 1979, eq. 2.1b)."""
        n = self.count + other.count
        safe = np.maximum(n, 1)
        with np.errstate(over="ignore", invalid="ignore"):
            delta = other.mean - self.mean
            mean = self.mean + delta * (other.count / safe)
            m2 = self.m2 + other.m2 + delta ** 2 * (self.count * (other.count / safe))
        return Moments(n, np.where(n > 0, mean, 0.0), np.where(n > 0, m2, 0.0))

    def update(self, x: np.ndarray) -> Moments:
        """Merge in the observed entries of a block ``x`` (N, D)."""
        return self.merge(Moments.of(x))

    def mean_std(self, names: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(D,) mean and population std, as :func:`dynvae.data.dataset.column_moments`
        gives them: std 1 for a constant or never-observed feature, mean 0 for the
        latter. DataError naming the feature whose moments overflow float64."""
        seen = self.count > 0
        with np.errstate(over="ignore", invalid="ignore"):
            var = self.m2 / np.maximum(self.count, 1)
            std = np.where(seen & (var > 0), np.sqrt(var), 1.0)
            scaled_max = np.abs(self.mean) / std
        bad = ~(np.isfinite(self.mean) & np.isfinite(var) & np.isfinite(scaled_max))
        if bad.any():
            d = int(np.argmax(bad))
            raise DataError(f"column {names[d]!r}: its mean or variance overflows float64; "
                            "rescale the column, e.g. divide it by a power of ten")
        return np.where(seen, self.mean, 0.0), std


def combine(count: np.ndarray, mean: np.ndarray, m2: np.ndarray) -> Moments:
    """The moments of the union of N sets given theirs, count/mean/m2 (N, D): the pairwise
    formula summed at once, M2 = sum M2_i + sum n_i (m_i - m)^2 (Chan et al. 1979)."""
    count = np.asarray(count, dtype=np.int64)
    total = count.sum(axis=0)
    safe = np.maximum(total, 1)
    with np.errstate(over="ignore", invalid="ignore"):
        grand = (count * mean).sum(axis=0) / safe
        m2_total = m2.sum(axis=0) + (count * (mean - grand) ** 2).sum(axis=0)
    return Moments(total, np.where(total > 0, grand, 0.0), np.where(total > 0, m2_total, 0.0))


def segment_moments(x: np.ndarray, starts: np.ndarray) -> Moments:
    """Moments of each of the consecutive row segments of ``x`` (rows, D) starting at
    ``starts`` (N,) (sorted, first 0): count/mean/m2 of shape (N, D)."""
    observed = ~np.isnan(x)
    values = np.where(observed, x, 0.0)
    count = np.add.reduceat(observed, starts, axis=0).astype(np.int64)       # (N, D)
    lengths = np.diff(np.append(starts, x.shape[0]))
    with np.errstate(over="ignore", invalid="ignore"):
        mean = np.add.reduceat(values, starts, axis=0) / np.maximum(count, 1)
        deviation = np.where(observed, x - np.repeat(mean, lengths, axis=0), 0.0)
        m2 = np.add.reduceat(deviation ** 2, starts, axis=0)
    return Moments(count, mean, m2)
