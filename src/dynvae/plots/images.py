"""Image figures of high-dimensional sequences: frames of image data, piano rolls of
binary data, feature-by-time heatmaps of the rest. Arrays as in dynvae.plots.series:
x (T, D) with NaN where missing, original scale."""

from __future__ import annotations

import os

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import MaxNLocator

from dynvae.plots.base import save

MAX_FRAMES = 12          # frames drawn per row; longer sequences are subsampled


def _frame_columns(T: int, limit: int = MAX_FRAMES) -> np.ndarray:
    return np.unique(np.linspace(0, T - 1, min(T, limit)).round().astype(int))


def _frame_grid(rows: list[tuple[str, np.ndarray]], labels: list[str], shape, title,
                path, vmin: float, vmax: float) -> None:
    """Rows of frames (each row (K, D) with NaN drawn grey) under one colour scale."""
    K = len(labels)
    fig, axes = plt.subplots(len(rows), K, figsize=(0.95 * K + 1.6, 1.05 * len(rows) + 0.7),
                             squeeze=False, layout="constrained")
    if title:
        fig.suptitle(title)
    cmap = plt.get_cmap("gray_r").with_extremes(bad=(0.85, 0.55, 0.55))
    image = None
    for r, (name, frames) in enumerate(rows):
        named = False
        for k in range(K):
            ax = axes[r, k]
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(labels[k], fontsize=8)
            if frames[k] is None:                 # nothing at this step (e.g. history)
                ax.axis("off")
                continue
            image = ax.imshow(np.ma.masked_invalid(frames[k].reshape(shape)), cmap=cmap,
                              vmin=vmin, vmax=vmax, interpolation="nearest")
            if not named:
                ax.set_ylabel(name, fontsize=8)
                named = True
    if image is not None:
        fig.colorbar(image, ax=axes, fraction=0.02, shrink=0.8)
    save(fig, path)


def _range(*arrays) -> tuple[float, float]:
    values = np.concatenate([np.ravel(a)[np.isfinite(np.ravel(a))] for a in arrays])
    return (float(values.min()), float(values.max())) if values.size else (0.0, 1.0)


def plot_frames(x, mask, mean, path: str | os.PathLike, shape: tuple[int, int],
                title: str | None = None) -> None:
    """Imputation of an image sequence as frames: what the model saw (missing pixels in
    pink), the imputed frames (seen pixels kept, the posterior mean in the gaps), and,
    when some pixels with values were hidden from the model, the data with them."""
    x, mask, mean = np.asarray(x, float), np.asarray(mask, bool), np.asarray(mean, float)
    cols = _frame_columns(len(x))
    seen = np.where(mask, x, np.nan)
    imputed = np.where(mask, x, mean)
    rows = [("seen\n(pink: not seen)", seen[cols]), ("imputed", imputed[cols])]
    if (~mask & np.isfinite(x)).any():
        rows.append(("data, hidden\npixels included", x[cols]))
    vmin, vmax = _range(seen, mean)
    _frame_grid(rows, [f"t={c}" for c in cols], shape, title, path, vmin, vmax)


def plot_forecast_frames(x_past, mean, path: str | os.PathLike, shape: tuple[int, int],
                         x_future=None, title: str | None = None) -> None:
    """The last history frames and the forecast frames (posterior mean) after them, with
    the held-out frames above the forecast when given."""
    x_past, mean = np.asarray(x_past, float), np.asarray(mean, float)
    H = len(mean)
    n_hist = min(len(x_past), max(2, MAX_FRAMES - H))
    hist = list(x_past[-n_hist:])
    labels = [f"{k - n_hist + 1}" for k in range(n_hist)] + [f"+{h + 1}" for h in range(H)]
    data_row = hist + (list(np.asarray(x_future, float)) if x_future is not None
                       else [None] * H)
    forecast_row = [None] * n_hist + list(mean)
    vmin, vmax = _range(x_past, mean)
    rows = [("data", data_row), ("forecast", forecast_row)]
    _frame_grid(rows, labels, shape, title or "forecast", path, vmin, vmax)


def _key_range(*rolls, margin: int = 2) -> tuple[int, int]:
    """[lo, hi) of the keys that are on in any roll (values > 0.5), widened by ``margin``
    keys on each side; all keys when none is on."""
    D = rolls[0].shape[1]
    used = np.zeros(D, dtype=bool)
    for roll in rolls:
        used |= (np.nan_to_num(roll) > 0.5).any(0)
    idx = np.nonzero(used)[0]
    if not idx.size:
        return 0, D
    return max(0, int(idx.min()) - margin), min(D, int(idx.max()) + 1 + margin)


def plot_forecast_roll(x_past, prob, path: str | os.PathLike, x_future=None,
                       title: str | None = None, lowest_key: int = 21) -> None:
    """Binary data with many features (a piano roll): the end of the history followed by
    the forecast probabilities, over the keys in use; held-out notes outlined in red."""
    x_past, prob = np.asarray(x_past, float), np.asarray(prob, float)
    H = len(prob)
    n_hist = min(len(x_past), max(4 * H, 24))
    roll = np.concatenate([x_past[-n_hist:], prob])               # (n_hist + H, D)
    lo, hi = _key_range(roll, *([] if x_future is None else [np.asarray(x_future, float)]))
    # keys: those played in the history or the held-out steps, and those the forecast
    # gives more than even odds
    fig, ax = plt.subplots(figsize=(9, 4), layout="constrained")
    fig.suptitle(title or "forecast")
    extent = (-n_hist + 0.5, H + 0.5, lowest_key + lo - 0.5, lowest_key + hi - 0.5)
    image = ax.imshow(np.nan_to_num(roll[:, lo:hi]).T, aspect="auto", origin="lower",
                      cmap="Greys", vmin=0, vmax=1, interpolation="nearest", extent=extent)
    ax.axvline(0.5, color="C1", lw=1.2, label="forecast starts")
    if x_future is not None:
        steps, keys = np.nonzero(np.nan_to_num(np.asarray(x_future, float))[:, lo:hi] > 0.5)
        ax.plot(steps + 1, keys + lo + lowest_key, "s", mfc="none", mec="C3", ms=5,
                label="held-out notes")
    fig.colorbar(image, ax=ax, fraction=0.03, label="note on / P(on)")
    ax.set_xlabel("step (history <= 0 < forecast)")
    ax.set_ylabel("MIDI key")
    ax.legend(loc="lower left", bbox_to_anchor=(0.0, 1.0), ncol=2, fontsize=7, frameon=False)
    save(fig, path)


def plot_heatmaps(t, x, mask, mean, std, path: str | os.PathLike, title: str | None = None,
                  binary: bool = False, time_label: str | None = None) -> None:
    """High-dimensional sequences (T, D) as feature-by-time images: the data (entries not
    seen by the model grey, hidden ones outlined), the posterior mean and the posterior
    std, the data and the mean on one colour scale. Binary data (a piano roll) shows the
    keys in use, the probability of a 1 instead of mean and std, and outlines only the
    hidden 1s (the hidden notes)."""
    t, x = np.asarray(t), np.asarray(x, float)
    seen = np.where(mask, x, np.nan)
    lo, hi = _key_range(x) if binary else (0, x.shape[1])
    # an 88-key piano roll is labelled in MIDI numbers, as plot_piano_roll labels it
    piano = binary and x.shape[1] == 88
    offset, ylabel = (21, "MIDI key") if piano else (0, "feature")
    shared = (0.0, 1.0) if binary else _range(seen, mean)
    # entries the model did not see: a colour off the data's scale (grey would read as
    # a value on the binary data's grey scale)
    unseen, unseen_name = ("#9ecae1", "blue") if binary else ("0.8", "grey")
    panels = [(f"data ({unseen_name}: not seen by the model)", seen, shared)]
    panels += [("P(x = 1)", mean, shared)] if binary else \
        [("posterior mean", mean, shared), ("posterior std", std, (None, None))]
    fig, axes = plt.subplots(len(panels), 1, figsize=(9, 2.5 * len(panels) + 0.5),
                             sharex=True, layout="constrained")
    if title:
        fig.suptitle(title)
    numeric = np.issubdtype(t.dtype, np.number)
    extent = ((float(t[0]) - 0.5, float(t[-1]) + 0.5) if numeric else
              (-0.5, len(t) - 0.5)) + (offset + lo - 0.5, offset + hi - 0.5)
    cmap = plt.get_cmap("Greys" if binary else "viridis").with_extremes(bad=unseen)
    for ax, (name, values, (vmin, vmax)) in zip(axes, panels, strict=True):
        image = ax.imshow(np.ma.masked_invalid(values[:, lo:hi].T), aspect="auto",
                          origin="lower", interpolation="nearest", extent=extent, cmap=cmap,
                          vmin=vmin, vmax=vmax)
        fig.colorbar(image, ax=ax, fraction=0.03)
        ax.set_ylabel(ylabel, fontsize=8)
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))     # keys, features: whole
        ax.set_title(name, fontsize=9)
    hidden = ~mask & np.isfinite(x) & ((x > 0.5) if binary else True)
    if hidden.any():
        ts, ds = np.nonzero(hidden)
        where = t[ts] if numeric else ts
        axes[0].plot(where, ds + offset, "s", mfc="none", mec="C3", ms=3,
                     label="hidden notes" if binary else "hidden")
        axes[0].legend(fontsize=7, loc="lower right", bbox_to_anchor=(1.0, 1.0),
                       frameon=False)
    axes[-1].set_xlabel(time_label or "t")
    save(fig, path)


def plot_piano_roll(roll, prob, path: str | os.PathLike, lowest_key: int = 21,
                    title: str | None = None, time_label: str | None = None) -> None:
    """A binary piano roll (T, 88) next to the model's note probabilities (T, 88), keys
    on the vertical axis as MIDI numbers, only the range that is used."""
    roll, prob = np.asarray(roll, float), np.asarray(prob, float)
    lo, hi = _key_range(roll, prob)
    fig, axes = plt.subplots(2, 1, figsize=(9, 6), sharex=True, layout="constrained")
    if title:
        fig.suptitle(title)
    extent = (-0.5, roll.shape[0] - 0.5, lowest_key + lo - 0.5, lowest_key + hi - 0.5)
    for ax, values, name in ((axes[0], roll, "piano roll"), (axes[1], prob, "P(key on)")):
        image = ax.imshow(values[:, lo:hi].T, aspect="auto", origin="lower", cmap="Greys",
                          interpolation="nearest", extent=extent, vmin=0, vmax=1)
        fig.colorbar(image, ax=ax, fraction=0.03)
        ax.set_ylabel("MIDI key")
        ax.set_title(name, fontsize=9)
    axes[-1].set_xlabel(time_label or "beat")
    save(fig, path)
