"""In-memory datasets of variable-length, partly observed, irregularly sampled sequences.

A :class:`Sequence` holds one series in NumPy with NaN marking missing values; a
:class:`SequenceDataset` holds many of them with their feature names and collates
them into padded :class:`~dynvae.data.batch.SequenceBatch` tensors for the models.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from dynvae.data.batch import SequenceBatch, check_frame_shape
from dynvae.errors import ConfigError, DataError
from dynvae.timegrid import check_time_grid


@dataclass
class Sequence:
    """One sequence.

    Attributes:
        t: (T,) float64 observation times, finite and strictly increasing.
        x: (T, D) float64 values; NaN marks a missing entry, inf is rejected.
        u: optional (T, U) float64 inputs, finite at every step.
        id: a name used in error messages and outputs.
    """

    t: np.ndarray
    x: np.ndarray
    u: np.ndarray | None = None
    id: str = "0"

    def __post_init__(self) -> None:
        self.id = str(self.id)
        self.t = _float_array(self.t, f"times of sequence {self.id!r}")
        self.x = _float_array(self.x, f"values of sequence {self.id!r}")
        if self.t.ndim != 1:
            raise DataError(f"times of sequence {self.id!r} must have shape (T,), "
                            f"got {self.t.shape}")
        if self.x.ndim != 2 or self.x.shape[0] != self.t.shape[0]:
            raise DataError(f"values of sequence {self.id!r} must have shape (T, D) with "
                            f"T={self.t.shape[0]}, got {self.x.shape}")
        if self.t.shape[0] == 0:
            raise DataError(f"sequence {self.id!r} has no time steps")
        check_time_grid(self.t, name=f"sequence {self.id!r}")
        inf = np.isinf(self.x)
        if inf.any():
            k, d = np.argwhere(inf)[0]
            raise DataError(f"sequence {self.id!r} has an inf value in feature {d} at "
                            f"t={self.t[k]:g}")
        if np.isnan(self.x).all():
            raise DataError(f"sequence {self.id!r} has no observed value")
        if self.u is not None:
            self.u = _float_array(self.u, f"inputs of sequence {self.id!r}")
            if self.u.ndim != 2 or self.u.shape[0] != self.t.shape[0]:
                raise DataError(f"inputs of sequence {self.id!r} must have shape (T, U) with "
                                f"T={self.t.shape[0]}, got {self.u.shape}")
            if not np.isfinite(self.u).all():
                k = int(np.argwhere(~np.isfinite(self.u))[0, 0])
                raise DataError(f"inputs of sequence {self.id!r} must be finite at every "
                                f"step; t={self.t[k]:g} has {self.u[k].tolist()}")

    def __len__(self) -> int:
        return self.t.shape[0]

    @property
    def mask(self) -> np.ndarray:
        """(T, D) bool, True where observed."""
        return ~np.isnan(self.x)


def _float_array(value, what: str) -> np.ndarray:
    arr = np.asarray(value)
    if arr.dtype == np.float64:
        return arr
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
        raise DataError(f"{what} must be numeric, got dtype {arr.dtype}")
    return arr.astype(np.float64)


@dataclass
class SequenceDataset:
    """A list of sequences sharing their features (and inputs).

    Attributes:
        sequences: the sequences; ids are unique.
        feature_names: D names of the columns of every ``x``.
        input_names: U names of the columns of every ``u`` (empty: no inputs).
        time_origin: ISO timestamp where t = 0 when times were parsed from dates
            (None when times are plain numbers); see :meth:`to_timestamps`.
        time_unit: unit of t (``"days"`` for parsed dates, e.g. ``"years"`` for
            built-ins indexed by decimal year; None when unknown).
        frame_shape: (C, H, W) when every step is an image frame stored flat
            (D = C * H * W, C-major order; see :class:`~dynvae.data.batch.SequenceBatch`);
            None for vector data. Batches carry it.
    """

    sequences: list[Sequence]
    feature_names: list[str]
    input_names: list[str] = field(default_factory=list)
    time_origin: str | None = None
    time_unit: str | None = None
    frame_shape: tuple[int, int, int] | None = None

    def __post_init__(self) -> None:
        self.sequences = list(self.sequences)
        if self.frame_shape is not None:
            self.frame_shape = check_frame_shape(self.frame_shape, len(self.feature_names))
        self.feature_names = [str(n) for n in self.feature_names]
        self.input_names = [str(n) for n in self.input_names]
        D, U = len(self.feature_names), len(self.input_names)
        seen: set[str] = set()
        for seq in self.sequences:
            if seq.x.shape[1] != D:
                raise DataError(f"sequence {seq.id!r} has {seq.x.shape[1]} features, the "
                                f"dataset has {D}: {self.feature_names}")
            if (seq.u is None) != (U == 0) or (seq.u is not None and seq.u.shape[1] != U):
                got = 0 if seq.u is None else seq.u.shape[1]
                raise DataError(f"sequence {seq.id!r} has {got} inputs, the dataset has {U}: "
                                f"{self.input_names}")
            if seq.id in seen:
                raise DataError(f"duplicate sequence id {seq.id!r}")
            seen.add(seq.id)

    # ----------------------------------------------------------------- access
    def __len__(self) -> int:
        return len(self.sequences)

    def __iter__(self) -> Iterator[Sequence]:
        return iter(self.sequences)

    def __getitem__(self, index):
        """An int gives a :class:`Sequence`; a slice, int list or bool mask a sub-dataset."""
        if isinstance(index, (int, np.integer)):
            return self.sequences[index]
        if isinstance(index, slice):
            return self._subset(self.sequences[index])
        index = np.asarray(index)
        if index.dtype == np.bool_:
            if index.shape != (len(self),):
                raise DataError(f"a boolean index must have shape ({len(self)},), "
                                f"got {index.shape}")
            index = np.flatnonzero(index)
        return self._subset([self.sequences[int(i)] for i in index.reshape(-1)])

    def _subset(self, sequences: list[Sequence]) -> SequenceDataset:
        return replace(self, sequences=sequences)

    @property
    def dim(self) -> int:
        """D, the number of features."""
        return len(self.feature_names)

    @property
    def input_dim(self) -> int:
        """U, the number of inputs (0 without inputs)."""
        return len(self.input_names)

    @property
    def lengths(self) -> np.ndarray:
        """(N,) number of time steps of each sequence."""
        return np.array([len(s) for s in self.sequences], dtype=np.int64)

    @property
    def ids(self) -> list[str]:
        return [s.id for s in self.sequences]

    def with_values(self, xs: list[np.ndarray]) -> SequenceDataset:
        """The same dataset with new (T, D) values for every sequence (NaN = missing)."""
        if len(xs) != len(self):
            raise DataError(f"got {len(xs)} value arrays for {len(self)} sequences")
        return self._subset([replace(s, x=x) for s, x in zip(self.sequences, xs, strict=True)])

    def with_time_unit(self, unit: str) -> SequenceDataset:
        """The same dataset with times (parsed from dates or durations) expressed in
        ``unit``, one of :data:`TIME_UNITS`; e.g. hours for hourly data, so that a daily
        period is 24."""
        if unit not in _NANOSECONDS:
            raise DataError(f"unknown time unit {unit!r}; one of {list(_NANOSECONDS)}")
        if self.time_unit not in _NANOSECONDS:
            raise DataError(f"times in {self.time_unit or 'plain numbers'} cannot be converted to "
                            f"{unit}: only times parsed from dates or durations can")
        factor = _NANOSECONDS[self.time_unit] / _NANOSECONDS[unit]
        return replace(self, sequences=[replace(s, t=s.t * factor) for s in self.sequences],
                       time_unit=unit)

    def to_timestamps(self, t) -> np.ndarray:
        """Map times ``t`` (any shape, in ``time_unit`` since ``time_origin``) back to
        ``datetime64`` values (UTC when the origin has a time zone); only for datasets
        whose times were parsed from dates."""
        if self.time_origin is None:
            raise DataError("this dataset's times were not parsed from dates (no time_origin)")
        import pandas as pd
        if self.time_unit not in _NANOSECONDS:
            raise DataError(f"unknown time_unit {self.time_unit!r}; one of {list(_NANOSECONDS)}")
        t = np.asarray(t, dtype=np.float64)
        origin = pd.Timestamp(self.time_origin)
        if origin.tz is not None:                 # absolute instants, returned in UTC
            origin = origin.tz_convert("UTC").tz_localize(None)
        # round to whole microseconds: float days since an origin decades back carry
        # ~1e-12 days (~0.1 us) of rounding error, which nanoseconds would show
        # ("01:00:00.000000001" and every other stamp of a CSV written with 9 digits)
        micro = np.round(t.reshape(-1) * (_NANOSECONDS[self.time_unit] / 1e3)).astype(np.int64)
        delta = pd.to_timedelta(micro * 1000, unit="ns")
        return (origin + delta).to_numpy().reshape(t.shape)

    def to_frame(self, id_col: str = "id", time_col: str = "t"):
        """Long-format :class:`pandas.DataFrame`: one row per (id, time), NaN = missing."""
        import pandas as pd
        parts = []
        for seq in self.sequences:
            cols = {id_col: [seq.id] * len(seq), time_col: seq.t}
            cols.update(zip(self.feature_names, seq.x.T, strict=True))
            if seq.u is not None:
                cols.update(zip(self.input_names, seq.u.T, strict=True))
            parts.append(pd.DataFrame(cols))
        return pd.concat(parts, ignore_index=True)

    # ---------------------------------------------------------------- batches
    def to_batch(self, indices=None, dtype: torch.dtype = torch.float32,
                 device=None) -> SequenceBatch:
        """Collate the sequences (all, or those at ``indices``) into one padded batch."""
        seqs = self.sequences if indices is None else [self.sequences[int(i)] for i in indices]
        return collate(seqs, dtype=dtype, device=device, frame_shape=self.frame_shape)

    def batches(self, batch_size: int, shuffle: bool = False,
                generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32,
                device=None) -> Iterator[SequenceBatch]:
        """Minibatches covering every sequence once; the last one may be smaller.

        With ``shuffle`` the order is a permutation drawn from ``generator``.
        """
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        n = len(self)
        order = torch.randperm(n, generator=generator).tolist() if shuffle else list(range(n))
        for start in range(0, n, batch_size):
            yield self.to_batch(order[start:start + batch_size], dtype=dtype, device=device)

    def split(self, fractions=(0.8, 0.1, 0.1), seed: int = 0) -> tuple[SequenceDataset, ...]:
        """Split by sequence into ``len(fractions)`` disjoint parts covering all sequences.

        The assignment is a permutation drawn from ``seed`` (deterministic); each part
        keeps the original order of its sequences and gets at least one sequence, so a
        dataset needs at least as many sequences as parts. A single sequence is never
        cut along time here: split it into several sequences first if needed.
        """
        sizes = split_sizes(len(self), fractions)
        perm = np.random.default_rng(seed).permutation(len(self))
        bounds = np.cumsum([0, *sizes])
        return tuple(self[np.sort(perm[a:b])] for a, b in zip(bounds[:-1], bounds[1:], strict=True))


_NANOSECONDS = {"days": 86_400e9, "hours": 3_600e9, "minutes": 60e9, "seconds": 1e9}
TIME_UNITS = tuple(_NANOSECONDS)          # units times parsed from dates or durations can take


def split_sizes(n: int, fractions) -> list[int]:
    """Part sizes summing to ``n``, each >= 1, closest to ``n * fractions``."""
    f = np.asarray(fractions, dtype=np.float64)
    if f.ndim != 1 or len(f) == 0 or (f <= 0).any() or not np.isclose(f.sum(), 1.0):
        raise ConfigError(f"fractions must be positive and sum to 1, got {tuple(fractions)}")
    if n < len(f):
        raise DataError(f"cannot split {n} sequence(s) into {len(f)} non-empty parts "
                        f"{tuple(float(v) for v in f)}; a single long sequence must be cut "
                        "into several sequences first")
    sizes = np.floor(f * n).astype(np.int64)
    order = np.argsort(-(f * n - sizes), kind="stable")   # largest remainders first
    sizes[order[: n - sizes.sum()]] += 1
    while (sizes == 0).any():
        sizes[np.argmax(sizes)] -= 1
        sizes[np.argmax(sizes == 0)] += 1
    return sizes.tolist()


def collate(sequences: list[Sequence], dtype: torch.dtype = torch.float32,
            device=None, frame_shape: tuple[int, int, int] | None = None) -> SequenceBatch:
    """Pad variable-length sequences into one :class:`SequenceBatch`.

    Beyond a sequence's length: x = 0, mask = False, u = 0, and t continues past
    the last time with the last step (1 for a one-step sequence), so t stays
    strictly increasing over the whole padded axis.
    """
    if len(sequences) == 0:
        raise DataError("cannot collate an empty list of sequences")
    B, T = len(sequences), max(len(s) for s in sequences)
    D = sequences[0].x.shape[1]
    has_u = sequences[0].u is not None
    x = np.zeros((B, T, D))
    mask = np.zeros((B, T, D), dtype=bool)
    t = np.zeros((B, T))
    u = np.zeros((B, T, sequences[0].u.shape[1])) if has_u else None
    for b, seq in enumerate(sequences):
        n = len(seq)
        if seq.x.shape[1] != D or (seq.u is not None) != has_u:
            raise DataError(f"sequence {seq.id!r} does not match the features/inputs of "
                            f"sequence {sequences[0].id!r}")
        mask[b, :n] = ~np.isnan(seq.x)
        x[b, :n] = np.where(mask[b, :n], seq.x, 0.0)
        step = seq.t[-1] - seq.t[-2] if n > 1 else 1.0
        t[b, :n] = seq.t
        t[b, n:] = seq.t[-1] + step * np.arange(1, T - n + 1)
        if has_u:
            u[b, :n] = seq.u
    t_out = torch.as_tensor(t, dtype=dtype)
    if (t_out[:, 1:] <= t_out[:, :-1]).any():
        b = int((t_out[:, 1:] <= t_out[:, :-1]).any(dim=1).nonzero()[0, 0])
        raise DataError(f"times of sequence {sequences[b].id!r} are not distinct in {dtype}; "
                        "use dtype=torch.float64 or shift the times closer to 0")
    return SequenceBatch(
        x=torch.as_tensor(x, dtype=dtype, device=device),             # (B, T, D)
        mask=torch.as_tensor(mask, device=device),                    # (B, T, D)
        t=t_out.to(device),                                           # (B, T)
        lengths=torch.as_tensor([len(s) for s in sequences], dtype=torch.long, device=device),
        u=None if u is None else torch.as_tensor(u, dtype=dtype, device=device),
        frame_shape=frame_shape,
    )


class Standardizer:
    """Per-feature affine scaling ``(x - mean) / std`` fitted on observed entries only.

    NaN entries are ignored by :meth:`fit` and stay NaN through :meth:`transform`.
    A feature with zero variance (one distinct observed value) gets std 1, and a
    feature never observed gets mean 0 and std 1, so both pass through unscaled.
    Inputs ``u`` and times are left as they are.
    """

    def __init__(self, mean=None, std=None, feature_names: list[str] | None = None) -> None:
        self.mean = None if mean is None else np.asarray(mean, dtype=np.float64)   # (D,)
        self.std = None if std is None else np.asarray(std, dtype=np.float64)      # (D,)
        self.feature_names = None if feature_names is None else list(feature_names)
        if (self.mean is None) != (self.std is None):
            raise ConfigError("Standardizer needs both mean and std, or neither")
        if self.mean is not None:
            if self.mean.ndim != 1 or self.mean.shape != self.std.shape:
                raise ConfigError(f"mean and std must both have shape (D,), got "
                                  f"{self.mean.shape} and {self.std.shape}")
            if not (np.isfinite(self.mean).all() and np.isfinite(self.std).all()
                    and (self.std > 0).all()):
                raise ConfigError("Standardizer mean must be finite and std finite and > 0")

    def fit(self, dataset: SequenceDataset) -> Standardizer:
        """Mean and (population) std of every feature over all observed entries."""
        if not isinstance(dataset, SequenceDataset):
            raise DataError(f"Standardizer.fit needs a SequenceDataset, got "
                            f"{type(dataset).__name__}")
        x = np.concatenate([s.x for s in dataset.sequences], axis=0)    # (sum T, D)
        self.mean, self.std = column_moments(x, dataset.feature_names)
        self.feature_names = list(dataset.feature_names)
        return self

    def _fitted(self, dim: int, names: list[str] | None = None
                ) -> tuple[np.ndarray, np.ndarray]:
        if self.mean is None:
            raise ConfigError("the Standardizer is not fitted: call fit(dataset) first")
        if dim != self.mean.shape[0]:
            ours = f" {list(names)}" if names is not None else ""
            fitted = f" {self.feature_names}" if self.feature_names else ""
            raise DataError(f"data has {dim} features{ours}, the Standardizer was fitted on "
                            f"{self.mean.shape[0]}{fitted} (on the command line, "
                            "--value-cols names the value columns and --time-col the "
                            "time column)")
        return self.mean, self.std

    def _check_order(self, dataset: SequenceDataset) -> None:
        """Features are matched by position; the fitted names in another order are a
        mistake that would silently swap features (other names are allowed)."""
        names = list(dataset.feature_names)
        if self.feature_names and names != self.feature_names and \
                sorted(names) == sorted(self.feature_names):
            raise DataError(f"features {names} are those the Standardizer was fitted on in "
                            f"another order; give them in the order {self.feature_names}")

    def transform(self, dataset: SequenceDataset) -> SequenceDataset:
        """Standardised values; DataError naming the feature if one overflows float64."""
        mean, std = self._fitted(dataset.dim, dataset.feature_names)
        self._check_order(dataset)
        with np.errstate(over="ignore"):
            xs = [(s.x - mean) / std for s in dataset.sequences]
        for seq, x in zip(dataset.sequences, xs, strict=True):
            if np.isinf(x).any():
                k, d = np.argwhere(np.isinf(x))[0]
                raise DataError(f"feature {dataset.feature_names[d]!r} of sequence "
                                f"{seq.id!r} overflows float64 when standardised at "
                                f"t={seq.t[k]:g} (value {seq.x[k, d]:.3g})")
        return dataset.with_values(xs)

    def inverse_transform(self, dataset: SequenceDataset) -> SequenceDataset:
        mean, std = self._fitted(dataset.dim, dataset.feature_names)
        self._check_order(dataset)
        return dataset.with_values([s.x * std + mean for s in dataset.sequences])

    def inverse_mean(self, mean):
        """Map means (..., D), NumPy or torch, back to the original scale."""
        loc, scale = self._fitted(mean.shape[-1])
        return mean * _like(scale, mean) + _like(loc, mean)

    def inverse_std(self, std):
        """Map standard deviations (..., D), NumPy or torch, back to the original scale."""
        _, scale = self._fitted(std.shape[-1])
        return std * _like(scale, std)

    def state_dict(self) -> dict:
        """Plain JSON-able dict: ``{"mean": [...], "std": [...], "feature_names": [...]}``."""
        mean, std = self._fitted(0 if self.mean is None else self.mean.shape[0])
        return {"mean": mean.tolist(), "std": std.tolist(),
                "feature_names": self.feature_names}

    @classmethod
    def from_state_dict(cls, state: dict) -> Standardizer:
        missing = {"mean", "std"} - set(state)
        if missing:
            raise ConfigError(f"Standardizer state lacks {sorted(missing)}; got keys "
                              f"{sorted(state)}")
        return cls(state["mean"], state["std"], state.get("feature_names"))


def column_moments(x: np.ndarray, names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(D,) mean and (population) std of the observed (non-NaN) entries of each column of
    ``x`` (N, D), in float64: a column with one distinct value gets std 1, a column with
    no observed value mean 0 and std 1. Raises DataError naming the column whose mean,
    variance or standardised values overflow float64 (e.g. values near +-1e308)."""
    x = np.asarray(x, dtype=np.float64)
    observed = ~np.isnan(x)
    count = np.maximum(observed.sum(axis=0), 1)
    with np.errstate(over="ignore", invalid="ignore"):
        mean = np.where(observed, x, 0.0).sum(axis=0) / count
        var = np.where(observed, (x - mean) ** 2, 0.0).sum(axis=0) / count
        std = np.where(observed.any(axis=0) & (var > 0), np.sqrt(var), 1.0)
        mean = np.where(observed.any(axis=0), mean, 0.0)
        scaled = np.where(observed, (x - mean) / std, 0.0)
    bad = ~(np.isfinite(mean) & np.isfinite(var) & np.isfinite(scaled).all(axis=0))
    if bad.any():
        d = int(np.argmax(bad))
        largest = float(np.nanmax(np.abs(x[:, d])))
        raise DataError(f"column {names[d]!r}: its mean or variance overflows float64 "
                        f"(largest magnitude {largest:.3g}); rescale the column, e.g. "
                        "divide it by a power of ten")
    return mean, std


def _like(values: np.ndarray, ref):
    """``values`` as a tensor on ``ref``'s device and dtype when ``ref`` is a tensor."""
    if isinstance(ref, torch.Tensor):
        return torch.as_tensor(values, dtype=ref.dtype, device=ref.device)
    return values
