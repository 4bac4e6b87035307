"""Metrics of a fitted model on held-out data, on the original scale of the data.

Every model is scored through the DVAE contract only (elbo, log_likelihood_bound,
reconstruct, forecast), so this works for exact and variational models alike.
The data passed in is standardised; log-likelihoods are mapped back to the
original scale with the Jacobian of the standardisation, -sum log std_d over the
scored entries. Metric names are documented in README.md.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from dynvae.data import Sequence, SequenceDataset, Standardizer
from dynvae.data.timing import time_irregularity
from dynvae.errors import DataError
from dynvae.models.base import DVAE, Prediction
from dynvae.progress import quiet
from dynvae.train import baselines

CHUNK = 64      # sequences scored at once (bounds memory; the progress bar moves per chunk)


@dataclass(frozen=True)
class EvalSettings:
    """hide_fraction: share of observed entries hidden for the imputation metrics.
    seed: seed of the hidden entries.  horizon: held-out final steps for forecasting
    (None: 10% of the shortest sequence, between 1 and 10).  iwae_samples: k of the
    importance-weighted bound."""

    hide_fraction: float = 0.1
    seed: int = 0
    horizon: int | None = None
    iwae_samples: int = 16


def evaluation_dtype(model: DVAE) -> torch.dtype:
    """The precision a run's model is evaluated in (metrics, imputation, forecasts,
    samples): float64, except for models with conv frame networks, which stay in the
    float32 they train in. Their evaluation draws dozens of posterior samples of every
    frame through the conv decoder, where float64 costs about 4x the time and twice the
    memory on a CPU (measured: reconstruct and a 16-sample IWAE of 3 moving-mnist
    sequences, 27.8 s in float64, 7.4 s in float32); the Monte Carlo error of those
    draws is far above float32's rounding."""
    config = getattr(model, "config", None)
    return torch.float32 if getattr(config, "uses_conv_frames", False) else torch.float64


def model_dtype(model: DVAE) -> torch.dtype:
    """The dtype of the model's parameters: what its batches are built in."""
    return next(model.parameters()).dtype


def _to_original(std: Standardizer, pred: Prediction) -> tuple[np.ndarray, np.ndarray]:
    mean = std.inverse_mean(pred.mean.detach().cpu().double()).numpy()
    return mean, std.inverse_std(pred.std.detach().cpu().double()).numpy()


def checked(pred: Prediction, model: DVAE, what: str, ids: list[str],
            valid: Tensor | None = None) -> Prediction:
    """``pred`` of ``model.<what>`` for the sequences ``ids``, or a NumericalError naming
    the model, the sequence, the step and the feature of its first non-finite predictive
    mean or std (at the ``valid`` (B, T) steps; every step when None): a prediction that
    overflowed is never written or scored as if it were one."""
    bad = ~(torch.isfinite(pred.mean) & torch.isfinite(pred.std))          # (B, T, D)
    if valid is not None:
        bad &= valid.to(bad.device)[..., None]
    if not bool(bad.any()):
        return pred
    from dynvae.errors import NumericalError
    b, k, d = (int(i) for i in bad.nonzero()[0])
    which = "mean" if not math.isfinite(float(pred.mean[b, k, d])) else "std"
    raise NumericalError(f"{type(model).__name__}.{what}: non-finite predictive {which} "
                         f"for sequence {ids[b]!r} at step {k} (t = {float(pred.t[b, k]):g}), "
                         f"feature {d}: the model's predictions overflowed")


def gaussian_nll(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    return 0.5 * math.log(2 * math.pi) + np.log(std) + 0.5 * ((x - mean) / std) ** 2


def chunks(n: int, size: int = CHUNK, lengths=None) -> list[list[int]]:
    """Index lists of at most ``size`` covering range(n): consecutive, or with
    ``lengths`` (N,) in order of length (ties in index order), so that each chunk,
    padded to its longest sequence, holds little padding."""
    order = (list(range(n)) if lengths is None
             else np.argsort(np.asarray(lengths), kind="stable").tolist())
    return [order[a:a + size] for a in range(0, n, size)]


# entries of one (K, B, T, D) Monte Carlo tensor of a prediction chunk: a Monte Carlo
# model holds a few such tensors (and a conv frame decoder activations several times
# larger), so 64 sequences of 20 frames of 64x64 pixels at K = 64 would need tens of GB
PREDICTION_ENTRIES = 2 ** 24


def prediction_chunk(model: DVAE, data: SequenceDataset, draws: int | None = None) -> int:
    """Sequences predicted at once: at most CHUNK, and at most PREDICTION_ENTRIES
    entries over ``draws`` posterior draws (default: the model's ``n_predict_samples``),
    steps and D."""
    if draws is None:
        draws = int(getattr(getattr(model, "config", None), "n_predict_samples", 1) or 1)
    per_sequence = draws * int(data.lengths.max()) * data.dim
    return max(1, min(CHUNK, PREDICTION_ENTRIES // per_sequence))


BERNOULLI_CLIP = 1e-7  # float32 resolution of a sigmoid near 0 and 1


def bernoulli_nll(x: np.ndarray, p: np.ndarray) -> np.ndarray:
    """-log Bernoulli(x | p), x in [0, 1]; p clipped to [1e-7, 1 - 1e-7]. The predictive
    of a Bernoulli observation averaged over the posterior is Bernoulli(E[p]), so this is
    the exact predictive NLL given the predictive mean."""
    p = np.clip(p, BERNOULLI_CLIP, 1 - BERNOULLI_CLIP)
    return -(x * np.log(p) + (1 - x) * np.log1p(-p))


def predictive_nll(model: DVAE, x: np.ndarray, mean: np.ndarray, std: np.ndarray
                   ) -> tuple[str, np.ndarray]:
    """The per-entry negative log predictive density in the model's observation family,
    and the infix that names it in metric keys: "nll" (Gaussian with the predictive
    mean and std) or "bernoulli_nll" (Bernoulli with the predictive mean)."""
    if model.observation_family == "bernoulli":
        return "bernoulli_nll", bernoulli_nll(x, mean)
    return "nll", gaussian_nll(x, mean, std)


@torch.no_grad()
def likelihood_metrics(model: DVAE, data: SequenceDataset, standardizer: Standardizer,
                       k: int, prefix: str = "", bar=None) -> dict[str, float]:
    """log_likelihood (exact or importance-weighted bound), per step, ELBO and IWAE per step.
    Sequences are scored CHUNK at a time; ``bar`` (a progress bar) advances by each."""
    bar = quiet() if bar is None else bar
    bar.set_description(f"{prefix or 'test_'}likelihood (IWAE k={k})")
    log_scale = torch.as_tensor(np.log(standardizer.std), dtype=torch.float64)
    elbo = bound = steps = 0.0
    for idx in chunks(len(data), prediction_chunk(model, data, draws=min(k, 64)),
                      data.lengths):
        batch = data.to_batch(idx, dtype=model_dtype(model))
        jacobian = float((model.scored_mask(batch).cpu().double() * log_scale).sum())
        steps += float(batch.lengths.sum())
        elbo += float(model.elbo(batch).elbo().detach().cpu().sum()) - jacobian
        bound += float(model.log_likelihood_bound(batch, k).detach().cpu().sum()) - jacobian
        bar.update(len(idx))
    return {f"{prefix}log_likelihood": bound, f"{prefix}log_likelihood_per_step": bound / steps,
            f"{prefix}elbo_per_step": elbo / steps, f"{prefix}iwae_per_step": bound / steps}


def hide_entries(batch, fraction: float, seed: int) -> Tensor:
    """(B, T, D) bool: observed entries hidden at random (each sequence keeps one)."""
    g = torch.Generator().manual_seed(seed)
    hidden = batch.mask & (torch.rand(batch.mask.shape, generator=g, dtype=torch.float64)
                           < fraction)
    for b in range(batch.batch_size):
        left = batch.mask[b] & ~hidden[b]
        if not left.any():
            first = batch.mask[b].nonzero()[0]
            hidden[b, first[0], first[1]] = False
    return hidden


@torch.no_grad()
def imputation_metrics(model: DVAE, data: SequenceDataset, standardizer: Standardizer,
                       fraction: float, seed: int, bar=None) -> dict[str, float]:
    bar = quiet() if bar is None else bar
    bar.set_description("imputation")
    batch = data.to_batch(dtype=torch.float64)
    hidden = hide_entries(batch, fraction, seed)       # drawn for the whole set at once
    if not hidden.any():
        bar.update(len(data))
        bar.clear()
        print(f"imputation metrics skipped: hiding {fraction:g} of the observed entries "
              "hid none (too few observed entries, each sequence keeps one)",
              file=sys.stderr)
        return {}
    mean = np.zeros(batch.x.shape)
    std = np.ones(batch.x.shape)
    for idx in chunks(len(data), prediction_chunk(model, data), data.lengths):
        part = data.to_batch(idx, dtype=model_dtype(model))
        hide = hidden[idx][:, :part.x.shape[1]]
        pred = model.reconstruct(part.with_mask(part.mask & ~hide))
        m, s = _to_original(standardizer, checked(pred, model, "reconstruct",
                                                  [data.ids[i] for i in idx], part.valid))
        mean[idx, :m.shape[1]], std[idx, :s.shape[1]] = m, s
        bar.update(len(idx))
    x = standardizer.inverse_mean(batch.x.double()).numpy()
    h = hidden.numpy()
    name, nll = predictive_nll(model, x, mean, std)
    metrics = {"test_imputation_mse": float(((mean - x) ** 2)[h].mean()),
               f"test_imputation_{name}": float(nll[h].mean()),
               "test_imputation_entries": float(h.sum())}
    # the same hidden entries filled by the simplest imputers, from what the model saw
    given = np.where((batch.mask & ~hidden).numpy(), x, np.nan)
    t = batch.t.double().numpy()
    t = np.broadcast_to(t if t.ndim == 2 else t[None], given.shape[:2])
    for key in ("mean", "linear"):
        guess = baselines.IMPUTERS[key](given, t, standardizer.mean)
        metrics[f"baseline_imputation_mse_{key}"] = float(((guess - x) ** 2)[h].mean())
    return metrics


def default_horizon(data: SequenceDataset) -> int:
    return int(min(10, max(1, round(0.1 * int(data.lengths.min())))))


def split_history(data: SequenceDataset, horizon: int) -> tuple[SequenceDataset, list]:
    """Sequences without their final ``horizon`` steps, and those steps (t, x)."""
    if int(data.lengths.min()) <= horizon:
        raise DataError(f"forecasting {horizon} held-out steps needs sequences longer than "
                        f"{horizon} steps")
    past, future = [], []
    for s in data:
        n = len(s) - horizon
        if np.isnan(s.x[:n]).all():
            raise DataError(f"sequence {s.id!r} has no observed value before its final "
                            f"{horizon} steps")
        past.append(Sequence(s.t[:n], s.x[:n], None if s.u is None else s.u[:n], s.id))
        future.append((s.t[n:], s.x[n:]))
    return SequenceDataset(past, data.feature_names, data.input_names,
                           frame_shape=getattr(data, "frame_shape", None)), future


@torch.no_grad()
def forecast_metrics(model: DVAE, data: SequenceDataset, standardizer: Standardizer,
                     horizon: int, bar=None) -> dict[str, float]:
    bar = quiet() if bar is None else bar
    bar.set_description(f"forecast ({horizon} steps)")
    past, future = split_history(data, horizon)
    t_future = torch.tensor(np.stack([f[0] for f in future]), dtype=torch.float64)
    mean = np.empty((*t_future.shape, data.dim))                       # (B, H, D)
    std = np.empty_like(mean)
    for idx in chunks(len(data), prediction_chunk(model, data), past.lengths):
        pred = model.forecast(past.to_batch(idx, dtype=model_dtype(model)),
                              t_future[idx].to(model_dtype(model)))
        mean[idx], std[idx] = _to_original(standardizer, checked(
            pred, model, "forecast", [data.ids[i] for i in idx]))
        bar.update(len(idx))
    x = standardizer.inverse_mean(np.stack([f[1] for f in future]))   # (B, H, D), NaN missing
    seen = ~np.isnan(x)
    if not seen.any():
        return {}
    name, nll = predictive_nll(model, np.where(seen, x, 0.0), mean, std)
    metrics = {"forecast_mse": float(((mean - x) ** 2)[seen].mean()),
               f"forecast_{name}": float(nll[seen].mean()),
               "forecast_horizon": float(horizon)}
    # the simplest forecasters from the same histories: the feature's training mean, the
    # last value (naive) and the value one season back, the season found in the histories
    histories = [standardizer.inverse_mean(s.x) for s in past]
    stacked = past.to_batch(dtype=torch.float64)
    # a season counted in rows is one in time only on a regular grid: on irregular times
    # (gaps, off-grid stamps) there is no seasonal-naive forecast (season 1: the last value)
    season = 1 if time_irregularity(past).irregular else baselines.season_length(
        np.where(stacked.mask.numpy(), standardizer.inverse_mean(stacked.x.numpy()), np.nan),
        stacked.valid.numpy())
    for key in baselines.FORECASTERS:
        guess = baselines.forecast_baseline(key, histories, horizon, standardizer.mean, season)
        metrics[f"baseline_forecast_mse_{key.replace('-', '_')}"] = float(
            ((guess - x) ** 2)[seen].mean())
    metrics["baseline_forecast_season"] = float(season)
    return metrics


BASELINE_NAMES = {"mean": "the training mean", "linear": "linear interpolation",
                  "naive": "the last value", "seasonal_naive": "seasonal-naive"}


def _times(ratio: float) -> str:
    """1.26x, 12.6x, 1204x: three significant digits, never in exponent notation."""
    return f"{ratio:.3g}x" if ratio < 100 else f"{ratio:.0f}x"


def baseline_lines(metrics: dict[str, float]) -> list[str]:
    """Lines that set the held-out MSEs beside the simplest baselines' on the same
    entries (``baseline_*`` metrics), each ending with a plain verdict."""
    lines = []
    for what, own, prefix in (("imputation", "test_imputation_mse", "baseline_imputation_mse_"),
                              ("forecast", "forecast_mse", "baseline_forecast_mse_")):
        if own not in metrics:
            continue
        found = {k[len(prefix):]: v for k, v in metrics.items() if k.startswith(prefix)}
        if metrics.get("baseline_forecast_season", 1) <= 1:
            found.pop("seasonal_naive", None)          # no season: the last value again
        if not found:
            continue

        def named(key: str) -> str:
            name = BASELINE_NAMES.get(key, key)
            if key == "seasonal_naive":
                name += f" with a {metrics.get('baseline_forecast_season', 1):g}-step season"
            return name
        parts = ", ".join(f"{named(k)} {v:.4g}" for k, v in found.items())
        best = min(found, key=found.get)
        ratio = (metrics[own] / found[best] if found[best] > 0 else
                 1.0 if metrics[own] == 0 else math.inf)
        verdict = ("better than every baseline" if ratio < 0.99 else
                   f"about as good as {named(best)}" if ratio <= 1.01 else
                   f"worse than {named(best)}, which is exact on these entries"
                   if math.isinf(ratio) else
                   f"worse than {named(best)} ({_times(ratio)} its MSE)")
        lines.append(f"test {what} MSE {metrics[own]:.4g} against baselines on the same "
                     f"entries: {parts}; {verdict}")
    return lines


@contextmanager
def seeded(seed: int, device: torch.device | str = "cpu") -> Iterator[None]:
    """Run the body on torch's generators seeded with ``seed`` (the generator of a CUDA
    ``device`` too) and restore the caller's generator states afterwards: Monte Carlo
    metrics computed inside are the same on every call."""
    device = torch.device(device)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        yield


def evaluate_model(model: DVAE, test: SequenceDataset, standardizer: Standardizer,
                   settings: EvalSettings = EvalSettings(), bar=None) -> dict[str, float]:
    """All held-out metrics of ``model`` on the standardised ``test`` data; Monte Carlo
    terms are drawn from generators seeded with ``settings.seed`` (repeatable). ``bar`` (a
    progress bar) advances by 3 x len(test): likelihood, imputation and forecast."""
    with seeded(settings.seed, model.device):
        return _evaluate_model(model, test, standardizer, settings,
                               quiet() if bar is None else bar)


def _evaluate_model(model: DVAE, test: SequenceDataset, standardizer: Standardizer,
                    settings: EvalSettings, bar) -> dict[str, float]:
    metrics = likelihood_metrics(model, test, standardizer, settings.iwae_samples, bar=bar)
    metrics["test_elbo_per_step"] = metrics.pop("elbo_per_step")
    metrics["test_iwae_per_step"] = metrics.pop("iwae_per_step")
    metrics.update(imputation_metrics(model, test, standardizer, settings.hide_fraction,
                                      settings.seed, bar=bar))
    horizon = settings.horizon or default_horizon(test)
    try:
        metrics.update(forecast_metrics(model, test, standardizer, horizon, bar=bar))
    except DataError as err:           # e.g. a model with inputs, or too short sequences
        bar.clear()
        print(f"forecast metrics skipped: {err}", file=sys.stderr)
    return metrics
