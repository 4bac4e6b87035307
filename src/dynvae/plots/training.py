"""The training curve of a run (the rows of RUN/metrics.csv) and its per-dimension KL."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence

import numpy as np
from matplotlib.ticker import MaxNLocator

from dynvae.plots.base import legend_above, panels, plt, save

# columns that say when (or why at that point) a row was written, not how well the
# model fits; time_budget_reached marks the last row of a fit its budget stopped
_CLOCK_COLUMNS = ("step", "epoch", "seconds", "time_budget_reached")


def curve_columns(history: list[dict]) -> tuple[list[str], dict[str, float]]:
    """(columns to draw, constant columns with their value): every numeric column of any
    row (sparse ones such as the validation bound included) except the clock columns and
    the per-dimension KL columns (see :func:`plot_kl_per_dimension`);
    a column with the same value in every row it appears in (at least two) is constant."""
    names: list[str] = []
    for row in history:
        names += [k for k in row if k not in names and k not in _CLOCK_COLUMNS
                  and not is_kl_dim(k)]
    shown, constant = [], {}
    for name in names:
        values = [r[name] for r in history if name in r]
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            continue
        finite = [float(v) for v in values if math.isfinite(float(v))]
        if len(finite) >= 2 and len(finite) == len(values) and min(finite) == max(finite):
            constant[name] = finite[0]
        else:
            shown.append(name)
    return shown, constant


def _smoothed(y: np.ndarray) -> np.ndarray:
    """Centred running median over about 2% of the points (at least 5; fewer at the
    ends), then a centred running mean over the same window: no lag behind a loss that
    falls fast at the start, where a trailing average stays above the curve for a
    window's length, no pull from single spikes, and no steps where the median of noisy
    values holds one value for a while."""
    import pandas as pd
    window = int(max(5, round(0.02 * len(y)))) | 1                          # odd
    median = pd.Series(np.asarray(y, dtype=float)).rolling(
        window, center=True, min_periods=1).median()
    return median.rolling(window, center=True, min_periods=1).mean().to_numpy()


def robust_limits(y: np.ndarray) -> tuple[float, float] | None:
    """y-limits that leave out a few extreme points (a loss spike at the first steps
    would otherwise flatten the rest of the curve): on a side where some finite point
    lies more than three 2nd-98th percentile ranges beyond that percentile, the limit
    is half a range beyond it; the other side keeps the data's extreme. None when no
    point is that far out."""
    finite = y[np.isfinite(y)]
    if finite.size < 20:
        return None
    lo, hi = np.percentile(finite, [2, 98])
    spread = hi - lo
    if not spread > 0:
        return None
    low_out, high_out = finite.min() < lo - 3 * spread, finite.max() > hi + 3 * spread
    if not (low_out or high_out):
        return None
    inside = finite[(finite >= lo - 3 * spread) & (finite <= hi + 3 * spread)]
    bottom = lo - 0.5 * spread if low_out else float(inside.min())
    top = hi + 0.5 * spread if high_out else float(inside.max())
    pad = 0.05 * (top - bottom)
    return float(bottom - pad), float(top + pad)


def plot_training_curve(history: list[dict], path: str | os.PathLike,
                        title: str | None = "training curve (on the scale the model is "
                        "fitted on)") -> None:
    """Every numeric column of ``history`` that changes, against ``step``; noisy
    per-step columns also get a smoothed line, sparse ones (e.g. the validation bound,
    written every eval_every steps) are drawn with markers. The title lists the
    constant columns (e.g. lr) instead of giving each a panel."""
    keys, constant = curve_columns(history)
    if constant:
        listed = ", ".join(f"{k} = {v:.4g}" for k, v in constant.items())
        title = f"{title}\nconstant: {listed}" if title else f"constant: {listed}"
    fig, axes = panels(max(len(keys), 1), title, height=1.9)
    steps = [r.get("step", i) for i, r in enumerate(history)]
    for ax, key in zip(axes, keys, strict=False):
        pts = np.array([(s, r[key]) for s, r in zip(steps, history, strict=True) if key in r],
                       dtype=float)
        sparse = len(pts) < 0.5 * len(history) or len(pts) < 50
        if sparse:
            ax.plot(pts[:, 0], pts[:, 1], marker="o", ms=3, lw=1.0, color="C1")
        else:
            ax.plot(pts[:, 0], pts[:, 1], lw=0.5, color="C0", alpha=0.45, label="per step")
            ax.plot(pts[:, 0], _smoothed(pts[:, 1]), lw=1.3, color="C0", label="smoothed")
            limits = robust_limits(pts[:, 1])
            if limits is not None:
                ax.set_ylim(*limits)
                y = pts[:, 1]
                off = int(np.sum((y < limits[0]) | (y > limits[1])))
                ax.text(0.995, 0.96, f"{off} of {len(y)} steps off the scale "
                        f"(range {np.nanmin(y):.3g} to {np.nanmax(y):.3g})",
                        transform=ax.transAxes, ha="right", va="top", fontsize=7,
                        color="0.35")
        ax.set_ylabel(key, fontsize=8)
    legend_above(axes[0])               # only panels with a smoothed line have one
    axes[-1].set_xlabel("step")
    axes[-1].xaxis.set_major_locator(MaxNLocator(integer=True))
    save(fig, path)


def is_kl_dim(key: str) -> bool:
    """A per-dimension KL column of metrics.csv: kl_dim0, kl_dim1, ..."""
    return key.startswith("kl_dim") and key[len("kl_dim"):].isdigit()


def plot_kl_per_dimension(history: list[dict], path: str | os.PathLike, threshold: float,
                          anneal_steps: int = 0,
                          title: str | None = "KL per time step of each latent dimension",
                          labels: Callable[[int], Sequence[str]] | None = None) -> bool:
    """The collapse diagnostic: the ``kl_dim*`` columns of ``history`` against ``step`` on
    a log scale, with the activity threshold and the end of the KL warm-up. A dimension
    that stays under the threshold carries no information. ``labels``: n -> a name for
    each of the n columns, in order (e.g. a model's ``kl_dim_labels``; default z[0],
    z[1], ...). Returns False (and writes nothing) when
    the history has no such columns."""
    keys = sorted({k for r in history for k in r if is_kl_dim(k)}, key=lambda k: int(k[6:]))
    if not keys:
        return False
    fig, ax = plt.subplots(figsize=(9, 4), layout="constrained")
    steps = np.array([r.get("step", i) for i, r in enumerate(history)])
    names = [f"z[{key[6:]}]" for key in keys] if labels is None else list(labels(len(keys)))
    if len(names) != len(keys):
        raise ValueError(f"{len(names)} labels for {len(keys)} KL columns")
    # up to 20 distinct colours (the default cycle repeats after 10)
    colours = plt.get_cmap("tab20" if len(keys) > 10 else "tab10").colors
    for i, (key, name) in enumerate(zip(keys, names, strict=True)):
        values = np.array([r.get(key, np.nan) for r in history], dtype=float)
        ax.plot(steps, np.maximum(values, 1e-6), lw=1, label=name,
                color=colours[i % len(colours)])
    ax.axhline(threshold, color="k", ls="--", lw=1, label=f"threshold {threshold:g}")
    if anneal_steps:
        ax.axvline(anneal_steps, color="grey", ls=":", lw=1, label="end of warm-up")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("nats per time step")
    # beside the axes, not over the curves (which fill the plot, low ones included)
    ax.legend(fontsize=7, ncol=1 + len(keys) // 16, loc="upper left",
              bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    if title:
        ax.set_title(title)
    save(fig, path)
    return True
