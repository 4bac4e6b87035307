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


def plot_training_curve(history: list[dict], path: str | os.PathLike,
                        title: str | None = "training curve") -> None:
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
    axes[-1].set_xlabel("t")
    _save(fig, path)


def plot_forecast(t_past: np.ndarray, x_past: np.ndarray, t_future: np.ndarray,
                  mean: np.ndarray, std: np.ndarray, feature_names: list[str],
                  path: str | os.PathLike, x_future: np.ndarray | None = None,
                  title: str | None = None) -> None:
    """History (NaN = missing), forecast mean with a +-2 std band, and held-out truth."""
    fig, axes = _panels(x_past.shape[1], title)
    for d, ax in enumerate(axes):
        ax.plot(t_past, x_past[:, d], ".-", color="k", ms=3, lw=0.6, label="history")
        ax.fill_between(t_future, mean[:, d] - 2 * std[:, d], mean[:, d] + 2 * std[:, d],
                        color="C1", alpha=0.25, label="forecast +- 2 std")
        ax.plot(t_future, mean[:, d], color="C1", lw=1.2, label="forecast mean")
        if x_future is not None:
            ax.plot(t_future, x_future[:, d], "x", color="C3", ms=5, label="held out")
        ax.set_ylabel(feature_names[d])
    axes[0].legend(fontsize=7, loc="best")
    axes[-1].set_xlabel("t")
    _save(fig, path)
