"""Figure of a GP fit: observations, posterior mean and a predictive band per output."""

from __future__ import annotations

import io
import os

import numpy as np

from dynvae.utils import atomic_write_bytes


def plot_gp_fit(path: str | os.PathLike, t_obs: np.ndarray, x_obs: np.ndarray,
                t_pred: np.ndarray, mean: np.ndarray, lower: np.ndarray, upper: np.ndarray,
                names: list[str], time_label: str = "time", title: str | None = None,
                train_range: tuple[float, float] | None = None) -> None:
    """Write a PNG with one panel per output.

    Args: t_obs (T,), x_obs (T, D) with NaN missing; t_pred (N,), mean/lower/upper (N, D);
    names: D output names. ``train_range`` shades the extrapolated region beyond it.
    """
    import matplotlib
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    D = x_obs.shape[1]
    fig, axes = plt.subplots(D, 1, figsize=(10, 3.2 * D), squeeze=False)
    for d, ax in enumerate(axes[:, 0]):
        ax.fill_between(t_pred, lower[:, d], upper[:, d], color="C0", alpha=0.25, lw=0,
                        label="95% predictive band")
        ax.plot(t_pred, mean[:, d], color="C0", lw=1.0, label="posterior mean")
        ax.plot(t_obs, x_obs[:, d], ".", color="k", ms=1.5, label="observed")
        missing = np.isnan(x_obs[:, d])
        if missing.any():
            ax.plot(t_obs[missing], np.interp(t_obs[missing], t_pred, mean[:, d]), "|",
                    color="C3", ms=8, label="missing (imputed)")
        if train_range is not None and t_pred.max() > train_range[1]:
            ax.axvspan(train_range[1], t_pred.max(), color="0.9", zorder=0,
                       label="extrapolation")
        ax.set_ylabel(names[d])
        ax.legend(loc="upper left", fontsize=8)
    axes[-1, 0].set_xlabel(time_label)
    if title:
        axes[0, 0].set_title(title)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
