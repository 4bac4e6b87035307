"""What every figure shares: the figure grid, the time axis, legends, saving, and the
checks that decide how data is drawn (binary values, images, dense series)."""

from __future__ import annotations

import io
import os
import re

import matplotlib

matplotlib.use("Agg")
import matplotlib.dates as mdates  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from dynvae.utils import atomic_write_bytes  # noqa: E402

MAX_LINE_PANELS = 8      # above this many features, sequences are drawn as images
DENSE_POINTS = 2000      # above this many time steps, observations are thinned
_PIXEL = re.compile(r"^pixel(\d+)_(\d+)$")


def save(fig, path: str | os.PathLike) -> None:
    """Write ``fig`` as a PNG atomically and close it."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def panels(n: int, title: str | None, height: float = 2.2, width: float = 9.0,
           sharex: bool = True):
    """A column of ``n`` axes under an optional title, laid out by matplotlib's
    constrained layout (no blank band under the title, whatever the height)."""
    fig, axes = plt.subplots(n, 1, figsize=(width, height * n + 0.5), sharex=sharex,
                             squeeze=False, layout="constrained")
    if title:
        fig.suptitle(title)
    return fig, axes[:, 0]


def is_dates(t) -> bool:
    return np.issubdtype(np.asarray(t).dtype, np.datetime64)


def time_axis(ax, t, label: str | None) -> None:
    """Label the (shared) time axis with ``label`` (the time column's name; "date" or
    "t" when None); datetime64 times get concise date ticks."""
    if is_dates(t):
        locator = mdates.AutoDateLocator()
        ax.xaxis.set_major_locator(locator)
        ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
        ax.set_xlabel(label or "date")
    else:
        ax.set_xlabel(label or "t")


def legend_above(axes, ncol: int = 5) -> None:
    """One legend in a row above the first of ``axes`` (an axes or a sequence of them),
    outside the data, with every kind of mark that any of them carries."""
    axes = list(np.atleast_1d(axes))
    found: dict[str, object] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            found.setdefault(label, handle)
    if found:
        axes[0].legend(list(found.values()), list(found), loc="lower left",
                       bbox_to_anchor=(0.0, 1.0), ncol=min(len(found), ncol), fontsize=7,
                       frameon=False, borderaxespad=0.2, handlelength=1.5)


def is_binary(values) -> bool:
    """True when every finite value is 0 or 1 (and there is at least one)."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    return v.size > 0 and bool(np.isin(v, (0.0, 1.0)).all())


def image_shape(feature_names: list[str]) -> tuple[int, int] | None:
    """(H, W) when the features are the pixels ``pixel{r}_{c}`` of an H x W image in
    row-major order (as the healing-digits dataset names them), else None."""
    found = [_PIXEL.match(name) for name in feature_names]
    if len(found) < 4 or not all(found):
        return None
    rows = [int(m.group(1)) for m in found]
    cols = [int(m.group(2)) for m in found]
    H, W = max(rows) + 1, max(cols) + 1
    if H * W != len(found) or [r * W + c for r, c in zip(rows, cols, strict=True)] != \
            list(range(H * W)):
        return None
    return H, W


def thin(n: int, limit: int = DENSE_POINTS) -> np.ndarray:
    """Indices of at most about ``limit`` evenly spaced points out of ``n``."""
    return np.arange(0, n, max(1, int(np.ceil(n / limit))))


def band(ax, t, mean, std, color: str, label: str, lower_bound: float | None = None,
         upper_bound: float | None = None) -> None:
    """Mean with a +-2 std band, clipped to the data's support when it has one."""
    lo, hi = mean - 2 * std, mean + 2 * std
    if lower_bound is not None:
        lo = np.maximum(lo, lower_bound)
    if upper_bound is not None:
        hi = np.minimum(hi, upper_bound)
    ax.fill_between(t, lo, hi, color=color, alpha=0.25, lw=0, label=label, zorder=2)
