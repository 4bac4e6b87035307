"""What the figures show: the right panels, marks, labels and limits for each kind of data.

Each test draws a figure, keeps it open (``plt.close`` is disabled) and inspects it;
the PNG is written as well.
"""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from dynvae import plots  # noqa: E402
from dynvae.plots import base, series  # noqa: E402


@pytest.fixture
def figure(monkeypatch):
    """Calls ``draw`` and returns the figure it made (left open for inspection)."""
    monkeypatch.setattr(base.plt, "close", lambda fig=None: None)

    def draw(function, *args, **kwargs):
        before = set(plt.get_fignums())
        function(*args, **kwargs)
        new = [n for n in plt.get_fignums() if n not in before]
        assert len(new) == 1
        fig = plt.figure(new[0])
        fig.canvas.draw()
        return fig
    yield draw
    plt.close("all")


def labels_of(fig) -> set[str]:
    out = set()
    for ax in fig.axes:
        legend = ax.get_legend()
        if legend is not None:
            out |= {t.get_text() for t in legend.get_texts()}
    return out


def test_training_curve_draws_the_validation_bound_and_drops_constant_columns(figure, tmp_path):
    history = [{"step": s + 1, "epoch": s // 10, "loss": 2.0 / (s + 1) + 0.01 * (s % 3),
                "beta": 1.0, "grad_norm": 1.0 + 0.1 * (s % 5), "lr": 1e-3, "seconds": 0.1 * s}
               for s in range(200)]
    for row in history[49::50]:
        row["val_elbo_per_step"] = -1.0 / row["step"]
    fig = figure(plots.plot_training_curve, history, tmp_path / "c.png")
    ylabels = [ax.get_ylabel() for ax in fig.axes]
    assert ylabels == ["loss", "grad_norm", "val_elbo_per_step"]
    assert "lr = 0.001" in fig._suptitle.get_text() and "beta = 1" in fig._suptitle.get_text()
    assert "scale" in fig._suptitle.get_text()
    val = fig.axes[2].lines[0]
    assert list(val.get_xdata()) == [50, 100, 150, 200]
    ticks = [t for t in fig.axes[-1].get_xticks()
             if fig.axes[-1].get_xlim()[0] <= t <= fig.axes[-1].get_xlim()[1]]
    assert ticks and all(float(t).is_integer() for t in ticks)
    assert (tmp_path / "c.png").stat().st_size > 0


def test_a_spike_at_the_start_does_not_flatten_the_curve(figure, tmp_path):
    rng = np.random.default_rng(0)
    loss = 2.0 - np.linspace(0, 1, 300) + 0.05 * rng.normal(size=300)
    loss[1] = 1500.0                                    # one diverging first step
    history = [{"step": s + 1, "loss": float(v), "grad_norm": 1.0 + 0.1 * (s % 7)}
               for s, v in enumerate(loss)]
    fig = figure(plots.plot_training_curve, history, tmp_path / "c.png")
    bottom, top = fig.axes[0].get_ylim()
    assert 2.0 < top < 3.0 and bottom > 0.5             # the slope is readable
    notes = [t.get_text() for t in fig.axes[0].texts]
    assert notes == [f"1 of 300 steps off the scale (range {loss.min():.3g} to 1.5e+03)"]
    assert len(fig.axes[1].texts) == 0                  # a curve without outliers: untouched
    lo, hi = fig.axes[1].get_ylim()
    assert lo <= 1.0 and hi >= 1.6


def test_robust_limits_leave_well_behaved_series_alone():
    from dynvae.plots.training import robust_limits
    assert robust_limits(np.linspace(-3, 5, 100)) is None
    assert robust_limits(np.array([1.0, 1e6, 2.0])) is None     # too few points to judge
    y = np.r_[np.linspace(0, 1, 99), -50.0]                     # one low outlier
    lo, hi = robust_limits(y)
    assert -1 < lo < 0 and 1 <= hi < 1.1


def test_title_leaves_no_blank_band_over_tall_figures(figure, tmp_path):
    history = [{"step": s, **{f"m{k}": float(s * k + s % 2) for k in range(8)}}
               for s in range(1, 30)]
    fig = figure(plots.plot_training_curve, history, tmp_path / "c.png")
    top_of_axes = max(ax.get_position().y1 for ax in fig.axes)
    # constrained layout: the first panel ends just under the title (one line of text)
    title_bottom = fig._suptitle.get_window_extent().y0 / fig.bbox.height
    assert 0 < title_bottom - top_of_axes < 0.05


def test_imputation_marks_imputed_and_hidden_entries_and_names_the_time_axis(figure, tmp_path):
    t = np.arange(1871.0, 1901.0)
    x = np.sin(t / 3)[:, None]
    mask = np.isfinite(x)
    x[[5, 6]] = np.nan                       # missing: imputed
    mask[[5, 6]] = False
    mask[[10]] = False                       # hidden for evaluation: value known
    fig = figure(plots.plot_imputation, t, x, mask, x * 0 + 0.5, np.full_like(x, 0.1),
                 ["volume"], tmp_path / "i.png", title="imputation", time_label="year")
    assert fig.axes[-1].get_xlabel() == "year"
    assert {"imputed (missing)", "hidden (truth)", "observed"} <= labels_of(fig)
    imputed = next(line for line in fig.axes[0].lines if line.get_label() == "imputed (missing)")
    assert list(imputed.get_xdata()) == [t[5], t[6]]


def test_binary_series_get_probabilities_not_a_band_below_zero(figure, tmp_path):
    rng = np.random.default_rng(0)
    x = (rng.random((40, 2)) < 0.3).astype(float)
    p = np.full((5, 2), 0.3)
    fig = figure(plots.plot_forecast, np.arange(40.0), x, np.arange(40.0, 45.0), p,
                 np.sqrt(p * (1 - p)), ["a", "b"], tmp_path / "f.png", binary=True)
    for ax in fig.axes:
        assert not ax.collections                   # no fill_between band
        assert ax.get_ylim()[0] > -0.1 and ax.get_ylim()[1] < 1.1
    assert "forecast P(x = 1)" in labels_of(fig)


def test_forecast_zooms_on_the_horizon(figure, tmp_path):
    t = np.arange(500.0)
    x = np.sin(t / 10)[:, None]
    fig = figure(plots.plot_forecast, t, x, np.array([500.0]), np.zeros((1, 1)),
                 np.ones((1, 1)), ["x"], tmp_path / "f.png", title="forecast")
    lo, hi = fig.axes[0].get_xlim()
    assert lo > 450 and hi > 500                   # the last 24 steps and the one forecast
    assert "last 24 of 500 history steps" in fig._suptitle.get_text()


def test_forecast_of_many_features_shows_varying_ones_and_says_how_many(figure, tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 64))
    x[:, :20] = 0.0                               # silent features come last
    x[rng.random((30, 64)) < 0.3] = np.nan
    x[:, 40] = rng.normal(size=30)                # fully observed and varying: first
    fig = figure(plots.plot_forecast, np.arange(30.0), x, np.arange(30.0, 33.0),
                 np.zeros((3, 64)), np.ones((3, 64)), [f"f{d}" for d in range(64)],
                 tmp_path / "f.png", title="forecast")
    shown = [ax.get_ylabel() for ax in fig.axes]
    assert len(shown) == 8 and "f40" in shown
    assert not any(int(name[1:]) < 20 for name in shown)
    assert "8 of 64 features" in fig._suptitle.get_text()


def test_piano_roll_forecast_draws_a_roll_of_the_keys_in_use(figure, tmp_path):
    roll = np.zeros((40, 88))
    roll[:, [40, 44, 47]] = 1.0
    fig = figure(plots.plot_forecast, np.arange(40.0), roll, np.arange(40.0, 42.0),
                 np.full((2, 88), 0.01), np.zeros((2, 88)), [f"k{d}" for d in range(88)],
                 tmp_path / "f.png", x_future=roll[:2], binary=True)
    images = [im for ax in fig.axes for im in ax.images]
    assert len(images) == 1
    lo, hi = fig.axes[0].get_ylim()
    assert lo == 21 + 38 - 0.5 and hi == 21 + 50 - 0.5     # keys 61..68 and 2 more each side


def test_image_data_is_drawn_as_frames(figure, tmp_path):
    names = [f"pixel{r}_{c}" for r in range(8) for c in range(8)]
    assert plots.image_shape(names) == (8, 8)
    assert plots.image_shape(names[::-1]) is None
    x = np.random.default_rng(0).random((10, 64))
    mask = np.random.default_rng(1).random((10, 64)) < 0.4
    fig = figure(plots.plot_imputation, np.arange(10.0), np.where(mask, x, np.nan), mask, x,
                 x * 0.1, names, tmp_path / "i.png")
    frames = [ax for ax in fig.axes if ax.images]
    assert len(frames) == 2 * 10                  # seen and imputed rows, one frame a step
    assert frames[0].images[0].get_array().shape == (8, 8)


def test_dense_series_thin_the_points_over_the_mean_line(figure, tmp_path):
    """Thinned dots drawn over the band and the mean line (which would hide them where
    the model fits), under the markers of hidden and imputed entries."""
    t = np.arange(50_000.0)
    x = np.sin(t / 500)[:, None] + 0.1
    fig = figure(plots.plot_imputation, t, x, np.ones_like(x, bool), x, np.full_like(x, 0.1),
                 ["x"], tmp_path / "d.png")
    lines = fig.axes[0].lines
    points = next(line for line in lines if line.get_label().startswith("observed"))
    mean = next(line for line in lines if line.get_label().endswith("mean"))
    assert len(points.get_xdata()) <= 2 * base.DENSE_POINTS
    assert fig.axes[0].collections[0].get_zorder() < points.get_zorder()
    assert mean.get_zorder() < points.get_zorder() < 4


def test_legends_sit_above_the_data(figure, tmp_path):
    t = np.arange(100.0)
    x = np.cos(t / 7)[:, None]
    fig = figure(plots.plot_imputation, t, x, np.ones_like(x, bool), x, np.full_like(x, 0.2),
                 ["x"], tmp_path / "i.png")
    ax = fig.axes[0]
    legend = ax.get_legend().get_window_extent()
    assert legend.y0 >= ax.get_window_extent().y1 - 1


def test_latents_say_how_many_of_how_many_are_drawn(figure, tmp_path):
    rng = np.random.default_rng(0)
    mean = rng.normal(size=(20, 16)) * np.r_[np.ones(4), np.full(12, 0.01)]
    fig = figure(plots.plot_latents, np.arange(20.0), mean, np.ones((20, 16)) * 0.1,
                 tmp_path / "z.png")
    assert "8 of 16 latents" in fig._suptitle.get_text()
    shown = [ax.get_ylabel() for ax in fig.axes]
    assert {"z[0]", "z[1]", "z[2]", "z[3]"} <= set(shown)


def test_dates_are_drawn_as_dates(figure, tmp_path):
    t = np.arange("2000-01-01", "2000-03-01", dtype="datetime64[D]")
    x = np.arange(len(t), dtype=float)[:, None]
    fig = figure(plots.plot_imputation, t, x, np.ones_like(x, bool), x, np.ones_like(x),
                 ["v"], tmp_path / "d.png", time_label="date")
    ticks = [t.get_text() for t in fig.axes[0].get_xticklabels() if t.get_text()]
    assert any(name in " ".join(ticks) for name in ("Jan", "Feb", "2000"))
    assert fig.axes[0].get_xlabel() == "date"


def test_history_window_and_feature_choice():
    assert series.history_window(100, 10) == 40
    assert series.history_window(10, 10) == 10
    x = np.zeros((5, 10))
    x[:, 7] = np.arange(5)
    assert 7 in series.chosen_features(x, limit=1)


def test_frame_shape_draws_frames_whatever_the_feature_names(figure, tmp_path):
    """Data with a frame shape (C, H, W) is drawn as frames of C * H rows (channels
    stacked); without it, these names would give heatmaps of feature indices."""
    names = [f"x{d}" for d in range(2 * 6 * 5)]
    assert series.drawn_frame_shape(names) is None
    x = np.random.default_rng(0).random((7, 60))
    mask = np.random.default_rng(1).random((7, 60)) < 0.5
    mask[3] = False                                        # a wholly missing frame
    fig = figure(plots.plot_imputation, np.arange(7.0), np.where(mask, x, np.nan), mask, x,
                 x * 0.1, names, tmp_path / "i.png", frame_shape=(2, 6, 5))
    frames = [ax for ax in fig.axes if ax.images]
    assert len(frames) == 2 * 7
    assert frames[0].images[0].get_array().shape == (12, 5)
    assert bool(frames[3].images[0].get_array().mask.all())     # drawn as missing
    fig = figure(plots.plot_forecast, np.arange(7.0), np.where(mask, x, np.nan),
                 np.arange(7.0, 9.0), x[:2], x[:2] * 0.1, names, tmp_path / "f.png",
                 x_future=x[:2], frame_shape=(2, 6, 5))
    assert all(ax.images[0].get_array().shape == (12, 5) for ax in fig.axes if ax.images)


def test_the_smoothed_loss_follows_a_fast_fall_without_lag():
    """A loss that starts at 64 and falls to 1.5 within ten steps: the smoothed line is
    at the curve from there on (a trailing average from the first value stayed near 3
    for dozens of steps), and one spike does not move it."""
    from dynvae.plots.training import _smoothed
    y = np.r_[63.9, 10, 5, 3, 2.5, 2, 1.8, 1.6, 1.5, np.full(400, 1.5)]
    y[200] = 50.0
    s = _smoothed(y)
    assert np.allclose(s[12:], 1.5) and s.shape == y.shape


def test_many_imputed_entries_are_small_dots_and_a_few_are_circles(figure, tmp_path):
    """926 imputed times (a grid added between observations) as open circles buried the
    data and the band; above MANY_MARKERS they are small dots, a few keep their circles."""
    from dynvae.plots.series import MANY_MARKERS
    t = np.arange(1500.0)
    for n_missing, marker in ((MANY_MARKERS + 300, "."), (12, "o")):
        x = np.sin(t / 50)[:, None]
        x[:n_missing] = np.nan
        mask = np.isfinite(x)
        fig = figure(plots.plot_imputation, t, x, mask, np.nan_to_num(x), np.full_like(x, 0.1),
                     ["x"], tmp_path / "m.png")
        imputed = next(line for line in fig.axes[0].lines
                       if line.get_label().startswith("imputed (missing)"))
        assert imputed.get_marker() == marker
        assert len(imputed.get_xdata()) == n_missing
