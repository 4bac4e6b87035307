"""Figures shared by the CLI and the examples (matplotlib, Agg backend, written atomically).

Arrays are NumPy: one sequence at a time, t (T,), values (T, D), on the original scale.
"""

from __future__ import annotations

import io
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from dynvae.utils import atomic_write_bytes  # noqa: E402


def _save(fig, path: str | os.PathLike) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def _panels(D: int, title: str | None):
    fig, axes = plt.subplots(D, 1, figsize=(9, 2.4 * D + 0.6), sharex=True, squeeze=False)
    if title:
        fig.suptitle(title)
    return fig, axes[:, 0]


def _time_axis(fig, ax, t: np.ndarray) -> None:
    """Label the shared x axis: "t", or "date" with slanted tick labels for datetime64 t."""
    if np.issubdtype(np.asarray(t).dtype, np.datetime64):
        ax.set_xlabel("date")
        fig.autofmt_xdate()
    else:
        ax.set_xlabel("t")


def plot_training_curve(history: list[dict], path: str | os.PathLike,
                        title: str | None = "training curve (on the scale the model is "
                        "fitted on)") -> None:
    """Every numeric column of ``history`` (rows of metrics.csv) against ``step``."""
    keys = [k for k in history[0] if k != "step"] if history else []
    keys = [k for k in keys if all(isinstance(r.get(k, 0.0), (int, float)) for r in history)]
    fig, axes = _panels(max(len(keys), 1), title)
    steps = [r.get("step", i) for i, r in enumerate(history)]
    for ax, key in zip(axes, keys, strict=False):
        pts = [(s, r[key]) for s, r in zip(steps, history, strict=True) if key in r]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="." if len(pts) < 50 else None)
        ax.set_ylabel(key, fontsize=8)
    axes[-1].set_xlabel("step")
    axes[-1].xaxis.set_major_locator(MaxNLocator(integer=True))
    _save(fig, path)


def plot_imputation(t: np.ndarray, x: np.ndarray, mask: np.ndarray, mean: np.ndarray,
                    std: np.ndarray, feature_names: list[str], path: str | os.PathLike,
                    title: str | None = None) -> None:
    """Posterior mean with a +-2 std band; observed entries as dots, hidden ones as crosses
    (where ``x`` holds a value that the model did not see, e.g. artificially hidden)."""
    fig, axes = _panels(x.shape[1], title)
    for d, ax in enumerate(axes):
        ax.fill_between(t, mean[:, d] - 2 * std[:, d], mean[:, d] + 2 * std[:, d],
                        color="C0", alpha=0.25, label="mean +- 2 std")
        ax.plot(t, mean[:, d], color="C0", lw=1.2, label="posterior mean")
        seen = mask[:, d]
        ax.plot(t[seen], x[seen, d], ".", color="k", ms=4, label="observed")
        hidden = ~seen & np.isfinite(x[:, d])
        if hidden.any():
            ax.plot(t[hidden], x[hidden, d], "x", color="C3", ms=5, label="hidden")
        ax.set_ylabel(feature_names[d])
    axes[0].legend(fontsize=7, loc="best")
    _time_axis(fig, axes[-1], t)
    _save(fig, path)


def plot_forecast(t_past: np.ndarray, x_past: np.ndarray, t_future: np.ndarray,
                  mean: np.ndarray, std: np.ndarray, feature_names: list[str],
                  path: str | os.PathLike, x_future: np.ndarray | None = None,
                  title: str | None = None) -> None:
    """History (NaN = missing), forecast mean with a +-2 std band, and held-out truth.

    With more than MAX_LINE_PANELS features, only the MAX_LINE_PANELS with the most
    observed history entries are drawn (the title says so)."""
    D = x_past.shape[1]
    features = np.arange(D)
    if D > MAX_LINE_PANELS:
        observed = np.isfinite(x_past).sum(0)
        features = np.sort(np.argsort(-observed, kind="stable")[:MAX_LINE_PANELS])
        shown = f"{MAX_LINE_PANELS} of {D} features (most observed)"
        title = f"{title}, {shown}" if title else shown
    fig, axes = _panels(len(features), title)
    for ax, d in zip(axes, features, strict=True):
        ax.plot(t_past, x_past[:, d], ".-", color="k", ms=3, lw=0.6, label="history")
        ax.fill_between(t_future, mean[:, d] - 2 * std[:, d], mean[:, d] + 2 * std[:, d],
                        color="C1", alpha=0.25, label="forecast +- 2 std")
        # markers: a one-step forecast is a single point, which a line alone would hide
        ax.plot(t_future, mean[:, d], ".-", color="C1", ms=4, lw=1.2, label="forecast mean")
        if x_future is not None:
            ax.plot(t_future, x_future[:, d], "x", color="C3", ms=5, label="held out")
        ax.set_ylabel(feature_names[d])
    axes[0].legend(fontsize=7, loc="best")
    _time_axis(fig, axes[-1], t_past)
    _save(fig, path)


MAX_LINE_PANELS = 8  # above this many features, sequences are drawn as heatmaps


def plot_heatmaps(t: np.ndarray, x: np.ndarray, mask: np.ndarray, mean: np.ndarray,
                  std: np.ndarray, path: str | os.PathLike, title: str | None = None,
                  binary: bool = False) -> None:
    """High-dimensional sequences (T, D) as feature-by-time images: the data (missing or
    hidden entries grey, hidden ones outlined), the posterior mean (for binary data the
    probability of a 1, i.e. a piano roll) and the posterior std band width. The data
    and the mean share one colour scale."""
    seen = np.where(mask, x, np.nan)
    both = np.concatenate([seen[np.isfinite(seen)], mean[np.isfinite(mean)]])
    shared = (float(both.min()), float(both.max())) if both.size else (None, None)
    panels = [("data (grey: not seen by the model)", seen, shared),
              ("P(x = 1)" if binary else "posterior mean", mean, shared),
              ("posterior std", std, (None, None))]
    fig, axes = plt.subplots(3, 1, figsize=(9, 7.5), sharex=True)
    if title:
        fig.suptitle(title)
    extent = (float(t[0]) - 0.5, float(t[-1]) + 0.5, -0.5, x.shape[1] - 0.5)
    cmap = plt.get_cmap("Greys" if binary else "viridis").with_extremes(bad="0.8")
    for ax, (name, values, (vmin, vmax)) in zip(axes, panels, strict=True):
        image = ax.imshow(np.ma.masked_invalid(values.T), aspect="auto", origin="lower",
                          interpolation="nearest", extent=extent, cmap=cmap, vmin=vmin,
                          vmax=vmax)
        fig.colorbar(image, ax=ax, fraction=0.03)
        ax.set_ylabel("key" if binary else "feature", fontsize=8)
        ax.set_title(name, fontsize=9)
    hidden = ~mask & np.isfinite(x)
    if hidden.any():
        ts, ds = np.nonzero(hidden)
        axes[0].plot(t[ts], ds, "s", mfc="none", mec="C3", ms=3, label="hidden")
        axes[0].legend(fontsize=7, loc="upper right")
    axes[-1].set_xlabel("t")
    _save(fig, path)


def plot_piano_roll(roll: np.ndarray, prob: np.ndarray, path: str | os.PathLike,
                    lowest_key: int = 21, title: str | None = None) -> None:
    """A binary piano roll (T, 88) next to the model's note probabilities (T, 88),
    keys on the vertical axis as MIDI numbers, only the range that is used."""
    used = np.nonzero((roll > 0).any(0) | (prob > 0.05).any(0))[0]
    lo, hi = (int(used.min()), int(used.max()) + 1) if used.size else (0, roll.shape[1])
    fig, axes = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    if title:
        fig.suptitle(title)
    extent = (-0.5, roll.shape[0] - 0.5, lowest_key + lo - 0.5, lowest_key + hi - 0.5)
    for ax, values, name in ((axes[0], roll, "piano roll"),
                             (axes[1], prob, "P(key on)")):
        image = ax.imshow(values[:, lo:hi].T, aspect="auto", origin="lower", cmap="Greys",
                          interpolation="nearest", extent=extent, vmin=0, vmax=1)
        fig.colorbar(image, ax=ax, fraction=0.03)
        ax.set_ylabel("MIDI key")
        ax.set_title(name, fontsize=9)
    axes[-1].set_xlabel("beat")
    _save(fig, path)


def plot_latents(t: np.ndarray, mean: np.ndarray, std: np.ndarray, path: str | os.PathLike,
                 title: str | None = "latent trajectories", max_dims: int = 8) -> None:
    """Posterior mean of each latent dimension (T, Z) with a +-2 std band."""
    Z = min(mean.shape[1], max_dims)
    fig, axes = _panels(Z, title)
    for z, ax in enumerate(axes):
        ax.fill_between(t, mean[:, z] - 2 * std[:, z], mean[:, z] + 2 * std[:, z],
                        color="C2", alpha=0.25)
        ax.plot(t, mean[:, z], color="C2", lw=1.2)
        ax.set_ylabel(f"z[{z}]")
    axes[-1].set_xlabel("t")
    _save(fig, path)
