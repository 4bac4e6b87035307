"""Run-directory figures (drawn by dynvae.plots) and the per-entry predictions written
by the sub-commands."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from dynvae.data import SequenceDataset, Standardizer
from dynvae.errors import DataError
from dynvae.models.base import DVAE
from dynvae.train.evaluation import (
    EvalSettings,
    checked,
    chunks,
    default_horizon,
    hide_entries,
    model_dtype,
    prediction_chunk,
    split_history,
)
from dynvae.train.latents import latent_trajectories


@torch.no_grad()
def predictions(model: DVAE, data: SequenceDataset, standardizer: Standardizer,
                hidden: torch.Tensor | None = None):
    """Original-scale (x, mask, mean, std), each (B, T, D), of ``reconstruct`` on the
    standardised ``data`` (with ``hidden`` entries withheld from the model)."""
    batch = data.to_batch(dtype=torch.float64)
    seen = batch.mask if hidden is None else batch.mask & ~hidden
    given = batch.with_mask(seen)
    preds = [checked(model.reconstruct(given.index(idx).to(dtype=model_dtype(model))),
                     model, "reconstruct",
                     [data.ids[i] for i in idx], batch.valid[idx])
             for idx in chunks(len(data), prediction_chunk(model, data))]   # bounded memory
    x = standardizer.inverse_mean(batch.x.double()).numpy()
    x = np.where(batch.mask.numpy(), x, np.nan)
    cat = lambda name: torch.cat([getattr(p, name).detach().cpu().double() for p in preds])
    mean = standardizer.inverse_mean(cat("mean")).numpy()
    std = standardizer.inverse_std(cat("std")).numpy()
    return batch, x, seen.numpy(), mean, std


def imputation_frame(data: SequenceDataset, batch, x, mean, std) -> pd.DataFrame:
    """Long table: id, t, (timestamp,) feature, observed (NaN if missing), mean, std."""
    rows = []
    for b, seq in enumerate(data):
        n = len(seq)
        for d, name in enumerate(data.feature_names):
            rows.append(pd.DataFrame({"id": seq.id, **time_columns(data, seq.t),
                                      "feature": name, "observed": x[b, :n, d],
                                      "mean": mean[b, :n, d], "std": std[b, :n, d]}))
    return pd.concat(rows, ignore_index=True)


def time_columns(data: SequenceDataset, t: np.ndarray) -> dict[str, np.ndarray]:
    """``{"t": t}``, plus ``"timestamp"`` (the dates again) when ``data``'s times were
    parsed from dates."""
    if data.time_origin is None:
        return {"t": t}
    return {"t": t, "timestamp": data.to_timestamps(t)}


def display_times(data: SequenceDataset, t: np.ndarray) -> np.ndarray:
    """Times for a plot's x axis: the dates when ``data``'s times were parsed from dates."""
    return t if data.time_origin is None else data.to_timestamps(t)


def time_label(data: SequenceDataset, spec: dict | None) -> str:
    """The name of the time axis: the --time-col of the data's spec, else the name
    ``dynvae datasets export`` gives the dataset's times (year, beat, date, ...)."""
    from dynvae.data.export import time_column_name
    return (spec or {}).get("time_col") or time_column_name(data)


def bernoulli_model(model: DVAE) -> bool:
    """True when the model's observation is Bernoulli (its mean is a probability)."""
    return model.observation_family == "bernoulli"


def plot_first_imputation(path, data: SequenceDataset, x, seen, mean, std,
                          hidden: bool = False, spec: dict | None = None,
                          binary: bool | None = None) -> None:
    """The imputation of ``data``'s first sequence (arrays (B, T, D), original scale).
    ``hidden``: the title says crosses mark entries hidden for evaluation."""
    from dynvae import plots
    n, seq = len(data[0]), data[0]
    title = f"imputation of sequence {seq.id!r}"
    plots.plot_imputation(display_times(data, seq.t), x[0, :n], seen[0, :n], mean[0, :n],
                          std[0, :n], data.feature_names, path,
                          title=f"{title}, some observed entries hidden for evaluation"
                          if hidden else title, time_label=time_label(data, spec),
                          binary=binary, frame_shape=getattr(data, "frame_shape", None))


def write_plots(out: Path, model: DVAE, test: SequenceDataset, standardizer: Standardizer,
                history: list[dict], settings: EvalSettings, spec: dict | None = None,
                train_config=None) -> None:
    """plots/training_curve.png, imputation.png, forecast.png, latents.png and
    piano_roll.png where they apply, and for gradient-trained models with a
    per-dimension KL plots/kl_per_dim.png."""
    from dynvae import plots
    if history:
        plots.plot_training_curve(history, out / "plots" / "training_curve.png")
    if history and train_config is not None:
        plots.plot_kl_per_dimension(history, out / "plots" / "kl_per_dim.png",
                                    train_config.collapse_threshold,
                                    train_config.kl_anneal_steps, labels=model.kl_dim_labels)
    first = test[:1]
    batch = first.to_batch(dtype=torch.float64)
    hidden = hide_entries(batch, settings.hide_fraction, settings.seed)
    _, x, seen, mean, std = predictions(model, first, standardizer, hidden)
    n, seq = len(first[0]), first[0]
    binary = bernoulli_model(model)
    plot_first_imputation(out / "plots" / "imputation.png", first, x, seen, mean, std,
                          hidden=True, spec=spec, binary=binary)
    if binary and plots.is_binary(x[0, :n]) and first.dim > plots.MAX_LINE_PANELS:
        plots.plot_piano_roll(np.nan_to_num(x[0, :n]), mean[0, :n],
                              out / "plots" / "piano_roll.png", title=f"{seq.id}",
                              time_label=time_label(first, spec))
    latents = latent_trajectories(model, batch.with_mask(batch.mask & ~hidden).to(
        dtype=model_dtype(model)))
    if latents is not None:
        note = getattr(model, "latent_plot_note", "")              # a second title line
        plots.plot_latents(display_times(first, seq.t), latents[0][0, :n].cpu().numpy(),
                           latents[1][0, :n].cpu().numpy(), out / "plots" / "latents.png",
                           title=f"posterior latents of sequence {seq.id!r}"
                           + (f"\n{note}" if note else ""),
                           time_label=time_label(first, spec))
    try:
        write_forecast_plot(out / "plots" / "forecast.png", model, first, standardizer,
                            settings.horizon or default_horizon(test), spec)
    except DataError as err:
        print(f"forecast plot skipped: {err}", file=sys.stderr)


@torch.no_grad()
def write_forecast_plot(path: Path, model: DVAE, data: SequenceDataset,
                        standardizer: Standardizer, horizon: int,
                        spec: dict | None = None) -> None:
    from dynvae import plots
    past, future = split_history(data, horizon)
    t_future = torch.tensor(future[0][0], dtype=model_dtype(model))[None]
    pred = model.forecast(past.to_batch(dtype=model_dtype(model)), t_future)
    mean = standardizer.inverse_mean(pred.mean.detach().cpu().double()).numpy()[0]
    std = standardizer.inverse_std(pred.std.detach().cpu().double()).numpy()[0]
    history = standardizer.inverse_transform(past)[0]
    truth = standardizer.inverse_mean(future[0][1])
    plots.plot_forecast(display_times(data, history.t), history.x,
                        display_times(data, future[0][0]), mean, std, data.feature_names, path,
                        x_future=truth, title=f"forecast of sequence {data[0].id!r}",
                        time_label=time_label(data, spec), binary=bernoulli_model(model),
                        frame_shape=getattr(data, "frame_shape", None))
