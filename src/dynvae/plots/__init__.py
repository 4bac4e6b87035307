"""Every figure dynvae draws (matplotlib, Agg backend, PNGs written atomically).

- ``training``: the training curve of a run;
- ``series``: imputation, forecast and latent trajectories of one sequence as lines;
- ``images``: frames of image data, piano rolls, heatmaps of many features;
- ``gp``: a state-space GP fit.

The line functions hand sequences with many features to the image ones, so callers
need not choose. Importing this package imports matplotlib.
"""

from dynvae.plots.base import MAX_LINE_PANELS, image_shape, is_binary
from dynvae.plots.gp import plot_gp_fit
from dynvae.plots.images import (
    plot_forecast_frames,
    plot_forecast_roll,
    plot_frames,
    plot_heatmaps,
    plot_piano_roll,
)
from dynvae.plots.series import plot_forecast, plot_imputation, plot_latents
from dynvae.plots.training import plot_kl_per_dimension, plot_training_curve

__all__ = [
    "MAX_LINE_PANELS",
    "image_shape",
    "is_binary",
    "plot_forecast",
    "plot_forecast_frames",
    "plot_forecast_roll",
    "plot_frames",
    "plot_gp_fit",
    "plot_heatmaps",
    "plot_imputation",
    "plot_kl_per_dimension",
    "plot_latents",
    "plot_piano_roll",
    "plot_training_curve",
]
