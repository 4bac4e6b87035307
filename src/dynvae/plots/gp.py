"""Figure of a GP fit: observations, posterior mean and a predictive band per output."""

from __future__ import annotations

import os

import numpy as np

from dynvae.plots.base import legend_above, panels, save, time_axis
from dynvae.plots.series import observed_points


def plot_gp_fit(path: str | os.PathLike, t_obs, x_obs, t_pred, mean, lower, upper,
                names: list[str], time_label: str | None = None, title: str | None = None,
                train_end=None) -> None:
    """One panel per output: the 95% predictive band and posterior mean over the
    observations (thinned when dense), the imputed mean at missing times, and the
    extrapolated region past ``train_end`` shaded.

    t_obs (T,) and t_pred (N,) numbers or datetime64; x_obs (T, D) with NaN missing;
    mean/lower/upper (N, D); names: D output names; time_label: the time column's name.
    """
    t_obs, t_pred = np.asarray(t_obs), np.asarray(t_pred)
    fig, axes = panels(x_obs.shape[1], title, height=3.0, width=10.0)
    numeric_pred = t_pred.astype("datetime64[ns]").astype(np.int64).astype(float) \
        if np.issubdtype(t_pred.dtype, np.datetime64) else t_pred.astype(float)
    numeric_obs = t_obs.astype("datetime64[ns]").astype(np.int64).astype(float) \
        if np.issubdtype(t_obs.dtype, np.datetime64) else t_obs.astype(float)
    for d, ax in enumerate(axes):
        observed_points(ax, t_obs, x_obs[:, d])
        ax.fill_between(t_pred, lower[:, d], upper[:, d], color="C0", alpha=0.3, lw=0,
                        label="95% predictive band", zorder=2)
        ax.plot(t_pred, mean[:, d], color="C0", lw=1.0, label="posterior mean", zorder=3)
        missing = np.isnan(x_obs[:, d])
        if missing.any():
            imputed = np.interp(numeric_obs[missing], numeric_pred, mean[:, d])
            ax.plot(t_obs[missing], imputed, "o", mfc="none", mec="C1", ms=4,
                    label=f"imputed ({int(missing.sum())} missing)", zorder=4)
        if train_end is not None and t_pred.max() > train_end:
            ax.axvspan(train_end, t_pred.max(), color="0.92", zorder=0, label="extrapolation")
        ax.set_ylabel(names[d])
    legend_above(axes)
    time_axis(axes[-1], t_pred, time_label)
    save(fig, path)
