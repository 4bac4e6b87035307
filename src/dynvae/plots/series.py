"""Line figures of one sequence: imputation, forecast, latent trajectories.

Arrays are NumPy, one sequence at a time: t (T,) numbers or datetime64, values (T, D)
with NaN where missing, on the original scale. Sequences with more than
MAX_LINE_PANELS features are drawn as images (dynvae.plots.images).
"""

from __future__ import annotations

import os

import numpy as np

from dynvae.plots import images
from dynvae.plots.base import (
    DENSE_POINTS,
    MAX_LINE_PANELS,
    band,
    image_shape,
    is_binary,
    legend_above,
    panels,
    save,
    thin,
    time_axis,
)


def observed_points(ax, t, y, label: str = "observed", zorder: float = 1.0) -> None:
    """Observations as dots; above DENSE_POINTS steps, small translucent dots thinned
    to about DENSE_POINTS, drawn over the model's mean line (which would hide them where
    the model fits) and under the markers of hidden and imputed entries."""
    seen = np.isfinite(y)
    if len(t) <= DENSE_POINTS:
        ax.plot(t[seen], y[seen], ".", color="k", ms=4, label=label, zorder=zorder)
        return
    keep = thin(len(t))
    step = keep[1] - keep[0] if len(keep) > 1 else 1
    keep = keep[seen[keep]]
    ax.plot(t[keep], y[keep], ".", color="k", ms=2.0, alpha=0.6, zorder=max(zorder, 3.5),
            label=f"{label} (1 in {step} drawn)")


SHORT = 5    # fewer time points than this are drawn as error bars, not a band
MANY_MARKERS = 200    # more imputed entries than this in a panel: small dots, not circles


def model_band(ax, t, mean, std, binary: bool, color: str, what: str) -> None:
    """Posterior mean and spread: for binary data P(x = 1), whose +-2 std band would
    leave [0, 1], so none is drawn; otherwise mean +- 2 std, as error bars at fewer than
    SHORT points (a band over one step would be invisible)."""
    marker = "o" if len(t) < SHORT else None
    if binary:
        ax.plot(t, mean, color=color, lw=1.2, marker=marker, label=f"{what} P(x = 1)",
                zorder=3)
        ax.set_ylim(-0.08, 1.08)
    elif len(t) < SHORT:
        ax.errorbar(t, mean, yerr=2 * std, fmt="o-", color=color, ms=4, capsize=4,
                    label=f"{what} mean +- 2 std", zorder=3)
    else:
        band(ax, t, mean, std, color, f"{what} +- 2 std")
        ax.plot(t, mean, color=color, lw=1.2, label=f"{what} mean", zorder=3)


def plot_imputation(t, x, mask, mean, std, feature_names: list[str],
                    path: str | os.PathLike, title: str | None = None,
                    time_label: str | None = None, binary: bool | None = None,
                    frame_shape: tuple[int, int, int] | None = None) -> None:
    """Posterior mean and spread of every entry. Dots: entries the model saw; red
    crosses: entries it did not see that have a value (hidden for evaluation); open
    circles: the imputed mean of the missing entries. More than MAX_LINE_PANELS features
    are drawn as frames (image data: a ``frame_shape`` (C, H, W), or pixel features), a
    piano roll (binary) or heatmaps.

    t (T,), x (T, D) NaN = missing, mask (T, D) True where seen, mean/std (T, D)."""
    t, x, mask = np.asarray(t), np.asarray(x, dtype=float), np.asarray(mask, dtype=bool)
    binary = is_binary(x) if binary is None else binary
    if x.shape[1] > MAX_LINE_PANELS:
        shape = drawn_frame_shape(feature_names, frame_shape)
        if shape is not None:
            return images.plot_frames(x, mask, mean, path, shape, title=title)
        return images.plot_heatmaps(t, x, mask, mean, std, path, title=title, binary=binary,
                                    time_label=time_label)
    fig, axes = panels(x.shape[1], title)
    for d, ax in enumerate(axes):
        seen = mask[:, d] & np.isfinite(x[:, d])
        observed_points(ax, t, np.where(seen, x[:, d], np.nan))
        model_band(ax, t, mean[:, d], std[:, d], binary, "C0", "posterior")
        hidden = ~mask[:, d] & np.isfinite(x[:, d])
        if hidden.any():
            ax.plot(t[hidden], x[hidden, d], "x", color="C3", ms=5, label="hidden (truth)",
                    zorder=4)
        missing = ~mask[:, d] & ~np.isfinite(x[:, d])
        if missing.sum() > MANY_MARKERS:
            # hundreds of open circles (e.g. a whole grid of added times) would bury the
            # data and the band: small dots, at most about DENSE_POINTS of them
            idx = np.flatnonzero(missing)
            drawn = thin(len(idx))
            step = drawn[1] - drawn[0] if len(drawn) > 1 else 1
            keep = idx[drawn]
            ax.plot(t[keep], mean[keep, d], ".", color="C1", ms=2.5, alpha=0.8, zorder=4,
                    label="imputed (missing)" + (f", 1 in {step} drawn" if step > 1 else ""))
        elif missing.any():
            ax.plot(t[missing], mean[missing, d], "o", mfc="none", mec="C1", ms=5,
                    label="imputed (missing)", zorder=4)
        ax.set_ylabel(feature_names[d])
    legend_above(axes)
    time_axis(axes[-1], t, time_label)
    save(fig, path)


def drawn_frame_shape(feature_names: list[str], frame_shape=None) -> tuple[int, int] | None:
    """(rows, cols) of the image a flat frame is drawn as: (C * H, W) for a frame shape
    (C, H, W), its channels stacked top to bottom (the flat layout is channel-major);
    else the shape the pixel feature names give (:func:`image_shape`), or None."""
    if frame_shape is not None:
        C, H, W = frame_shape
        return C * H, W
    return image_shape(feature_names)


def history_window(n_past: int, horizon: int) -> int:
    """How many of the last history steps a forecast figure shows: enough to see the
    forecast against its context (4 horizons, at least 24 steps), not the whole past."""
    return min(n_past, max(4 * horizon, 24))


def chosen_features(x_past: np.ndarray, limit: int = MAX_LINE_PANELS) -> np.ndarray:
    """Indices (sorted) of the ``limit`` features to draw: those that vary in the history
    first (a constant or silent feature says nothing), then the most observed."""
    observed = np.isfinite(x_past).sum(0)
    spread = np.array([np.nanstd(c) if np.isfinite(c).any() else 0.0 for c in x_past.T])
    constant = (spread == 0).astype(int)
    order = np.lexsort((-observed, constant))         # varying first, then most observed
    return np.sort(order[:limit])


def plot_forecast(t_past, x_past, t_future, mean, std, feature_names: list[str],
                  path: str | os.PathLike, x_future=None, title: str | None = None,
                  time_label: str | None = None, binary: bool | None = None,
                  frame_shape: tuple[int, int, int] | None = None) -> None:
    """The last steps of the history, the forecast (mean +- 2 std, or P(x = 1) for binary
    data) and the held-out truth when given. Images (a ``frame_shape`` (C, H, W), or pixel
    features) are drawn as frames
    and binary data with many features as a piano roll; other data with more than
    MAX_LINE_PANELS features shows the MAX_LINE_PANELS that vary and are most observed.

    t_past (T,), x_past (T, D) NaN = missing, t_future (H,), mean/std/x_future (H, D)."""
    t_past, x_past = np.asarray(t_past), np.asarray(x_past, dtype=float)
    binary = is_binary(x_past) if binary is None else binary
    D, H = x_past.shape[1], len(t_future)
    if D > MAX_LINE_PANELS:
        shape = drawn_frame_shape(feature_names, frame_shape)
        if shape is not None:
            return images.plot_forecast_frames(x_past, mean, path, shape, x_future, title)
        if binary:
            return images.plot_forecast_roll(x_past, mean, path, x_future, title)
    keep = history_window(len(t_past), H)
    notes = [] if keep == len(t_past) else [f"last {keep} of {len(t_past)} history steps"]
    features = np.arange(D)
    if D > MAX_LINE_PANELS:
        features = chosen_features(x_past[-keep:])
        notes.append(f"{len(features)} of {D} features (varying, most observed)")
    title = ", ".join(filter(None, [title, *notes]))
    fig, axes = panels(len(features), title)
    tp, xp = t_past[-keep:], x_past[-keep:]
    for ax, d in zip(axes, features, strict=True):
        ax.plot(tp, xp[:, d], "-", color="0.6", lw=0.7, zorder=1)
        ax.plot(tp, xp[:, d], ".", color="k", ms=4, label="history", zorder=2)
        model_band(ax, t_future, mean[:, d], std[:, d], binary, "C1", "forecast")
        if x_future is not None:
            ax.plot(t_future, x_future[:, d], "x", color="C3", ms=6, label="held out",
                    zorder=4)
        ax.axvline(t_future[0], color="0.5", lw=0.7, ls=":", zorder=0)
        ax.set_ylabel(feature_names[d])
    legend_above(axes)
    time_axis(axes[-1], t_past, time_label)
    save(fig, path)


def plot_latents(t, mean, std, path: str | os.PathLike,
                 title: str | None = "posterior latents", max_dims: int = MAX_LINE_PANELS,
                 time_label: str | None = None) -> None:
    """Posterior mean of the latent dimensions (T, Z) with a +-2 std band. With more than
    ``max_dims`` dimensions, the ones whose mean moves most over time are drawn and the
    title says how many of how many."""
    Z = mean.shape[1]
    dims = np.arange(Z)
    if Z > max_dims:
        dims = np.sort(np.argsort(-np.std(mean, axis=0), kind="stable")[:max_dims])
        shown = f"{max_dims} of {Z} latents (those that vary most over time)"
        title = f"{title}: {shown}" if title else shown
    fig, axes = panels(len(dims), title, height=1.6)
    for z, ax in zip(dims, axes, strict=True):
        band(ax, t, mean[:, z], std[:, z], "C2", "+- 2 std")
        ax.plot(t, mean[:, z], color="C2", lw=1.2, label="mean")
        ax.set_ylabel(f"z[{z}]")
    legend_above(axes[0])
    time_axis(axes[-1], t, time_label)
    save(fig, path)
