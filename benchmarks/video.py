"""Moving-mnist forecasting and dropped-frame imputation: conv vs MLP frames vs baselines.

Each model (DKF and VRNN, each with conv frames and with MLP frames, Bernoulli pixels)
is trained for the same wall-clock budget on moving-mnist training sequences. Forecast:
on the test sequences it sees the first ``--context`` frames and forecasts the next
``--horizon`` (posterior predictive mean). Imputation: the same trained model gets the
whole test sequences with ``--drop-fraction`` of their frames dropped (all pixels
masked; drawn with a fixed seed, never the first or last frame) and imputes them with
its ``reconstruct`` posterior predictive mean. Scores: per-pixel MSE and Bernoulli
cross-entropy against the true frames (forecast frames, resp. dropped frames), and
training steps per second. Baselines: the mean training frame; copy-last-frame
(forecast) / copy the previous observed frame (imputation); linear in time:
extrapolation of the last two frames (clipped to [0, 1]) / interpolation between the
nearest observed frames before and after.

    PYTHONPATH=src python benchmarks/video.py [--quick] [--json PATH]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from dynvae.data import load_dataset
from dynvae.data.dataset import Sequence, SequenceDataset
from dynvae.models.registry import model_class
from dynvae.train.trainer import TrainConfig, Trainer
from dynvae.utils import atomic_write_json

CONV = dict(frame_encoder="conv", frame_decoder="conv", frame_channels=(16, 32, 32),
            frame_features=128)
MODELS = {
    "dkf-conv": ("dkf", dict(latent_dim=16, encoder="filtering", **CONV)),
    "dkf-mlp": ("dkf", dict(latent_dim=16, encoder="filtering")),
    "vrnn-conv": ("vrnn", dict(latent_dim=16, encoder="filtering", **CONV)),
    "vrnn-mlp": ("vrnn", dict(latent_dim=16, encoder="filtering")),
}
EPS = 1e-6


def scores(pred: np.ndarray, truth: np.ndarray) -> dict:
    """Per-pixel MSE and Bernoulli cross-entropy of predicted frames (N, H, D) in [0, 1]."""
    p = np.clip(pred, EPS, 1 - EPS)
    bce = -(truth * np.log(p) + (1 - truth) * np.log(1 - p)).mean()
    return dict(mse=float(((pred - truth) ** 2).mean()), bce=float(bce))


def context_of(data: SequenceDataset, context: int) -> SequenceDataset:
    seqs = [Sequence(s.t[:context], s.x[:context], id=s.id) for s in data]
    return SequenceDataset(seqs, data.feature_names, frame_shape=data.frame_shape)


def dropped_frames(n: int, T: int, fraction: float, seed: int) -> np.ndarray:
    """(N, T) bool, True on round(fraction * T) frames per sequence drawn at random among
    frames 1..T-2 (the first and last stay observed, so interpolation is defined)."""
    k = min(T - 2, max(1, round(fraction * T)))
    rng = np.random.default_rng(seed)
    drop = np.zeros((n, T), dtype=bool)
    for row in drop:
        row[1 + rng.choice(T - 2, size=k, replace=False)] = True
    return drop


def imputation_baselines(x: np.ndarray, drop: np.ndarray, mean_frame: np.ndarray) -> dict:
    """Imputation scores of the mean frame, previous observed frame and linear interpolation
    in time between the nearest observed frames; x (N, T, D), drop (N, T)."""
    T = x.shape[1]
    steps = np.arange(T)
    locf, linear = x.copy(), x.copy()
    for i, dropped in enumerate(drop):
        seen = steps[~dropped]
        for t in steps[dropped]:
            before, after = seen[seen < t].max(), seen[seen > t].min()
            w = (t - before) / (after - before)
            locf[i, t] = x[i, before]
            linear[i, t] = (1 - w) * x[i, before] + w * x[i, after]
    truth = x[drop]                                                        # (M, D)
    mean = np.broadcast_to(mean_frame, truth.shape)
    return {"mean-frame": scores(mean, truth), "copy-last-frame": scores(locf[drop], truth),
            "linear-in-time": scores(linear[drop], truth)}


def with_imputation(row: dict, imputed: dict) -> dict:
    return dict(row, imputation_mse=imputed["mse"], imputation_bce=imputed["bce"])


def baselines(train: SequenceDataset, test: SequenceDataset, context: int,
              horizon: int, drop: np.ndarray) -> list[dict]:
    x = np.stack([s.x for s in test])                                      # (N, T, D)
    mean_frame = np.concatenate([s.x for s in train]).mean(0)              # (D,)
    last, before = x[:, context - 1], x[:, context - 2]
    truth = x[:, context:context + horizon]
    k = np.arange(1, horizon + 1)[None, :, None]
    copy = np.repeat(last[:, None], horizon, 1)
    linear = np.clip(last[:, None] + k * (last - before)[:, None], 0.0, 1.0)
    mean = np.broadcast_to(mean_frame, truth.shape)
    forecast = {"mean-frame": scores(mean, truth), "copy-last-frame": scores(copy, truth),
                "linear-in-time": scores(linear, truth)}
    imputed = imputation_baselines(x, drop, mean_frame)
    return [with_imputation(dict(case="moving-mnist", impl=name, seconds=0.0, **forecast[name]),
                            imputed[name]) for name in forecast]


@torch.no_grad()
def impute(model, test: SequenceDataset, drop: np.ndarray, chunk: int = 10) -> dict:
    """Scores of the posterior predictive mean on the dropped frames, ``chunk`` sequences
    per ``reconstruct`` call (bounded memory with conv decoders)."""
    preds = []
    for start in range(0, len(test), chunk):
        idx = list(range(start, min(start + chunk, len(test))))
        batch = test.to_batch(idx)
        hide = torch.as_tensor(drop[idx])[..., None]                       # (b, T, 1)
        mean = model.reconstruct(batch.with_mask(batch.mask & ~hide)).mean  # (b, T, D)
        preds.append(mean.double().numpy())
    x = np.stack([s.x for s in test])                                      # (N, T, D)
    return scores(np.concatenate(preds)[drop], x[drop])


def train_and_score(name: str, train, valid, test, drop: np.ndarray, args) -> dict:
    kind, config = MODELS[name]
    cls = model_class(kind)
    torch.manual_seed(args.seed)
    config = cls.Config(**config, observation="bernoulli", n_predict_samples=16,
                        frame_shape=train.frame_shape)
    model = cls.from_config(config, train.dim, 0)
    cfg = TrainConfig(lr=1e-3, batch_size=args.batch_size, max_epochs=100_000,
                      max_seconds=args.budget_seconds, eval_every=50, patience=None,
                      seed=args.seed, progress=False)
    start = time.perf_counter()
    result = Trainer(model, cfg).fit(train, valid)
    seconds = time.perf_counter() - start
    model.eval()
    past = context_of(test, args.context).to_batch()
    t_future = torch.arange(args.context, args.context + args.horizon,
                            dtype=past.t.dtype).expand(len(test), -1)
    with torch.no_grad():
        pred = model.forecast(past, t_future).mean.double().numpy()          # (N, H, D)
    truth = np.stack([s.x[args.context:args.context + args.horizon] for s in test])
    steps = len(result.history)
    row = dict(case="moving-mnist", impl=name, seconds=seconds, steps=steps,
               steps_per_s=steps / seconds, **scores(pred, truth))
    return with_imputation(row, impute(model, test, drop))


def report(row: dict) -> str:
    return (f"{row['impl']:>16}: forecast mse {row['mse']:.4f} bce {row['bce']:.4f}  "
            f"imputation mse {row['imputation_mse']:.4f} bce {row['imputation_bce']:.4f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small data, 10 s per model")
    parser.add_argument("--json", help="write the rows to this file")
    parser.add_argument("--budget-seconds", type=float, default=120.0)
    parser.add_argument("--n-train", type=int, default=500)
    parser.add_argument("--n-test", type=int, default=100)
    parser.add_argument("--context", type=int, default=10)
    parser.add_argument("--horizon", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--drop-fraction", type=float, default=0.3,
                        help="share of each test sequence's frames dropped for imputation")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.quick:
        args.budget_seconds, args.n_train, args.n_test = 10.0, 64, 16
    frames = args.context + args.horizon
    train = load_dataset("moving-mnist", split="train", n_sequences=args.n_train,
                         frames=frames, seed=args.seed)
    valid = load_dataset("moving-mnist", split="valid", n_sequences=max(8, args.n_test // 4),
                         frames=frames, seed=args.seed)
    test = load_dataset("moving-mnist", split="test", n_sequences=args.n_test, frames=frames,
                        seed=args.seed)
    drop = dropped_frames(len(test), frames, args.drop_fraction, args.seed + 1)   # (N, T)
    print(f"imputation: {int(drop.sum(1)[0])} of {frames} frames dropped per test sequence")
    rows = baselines(train, test, args.context, args.horizon, drop)
    n_baselines = len(rows)
    for row in rows:
        print(report(row), flush=True)
    for name in args.models.split(","):
        row = train_and_score(name, train, valid, test, drop, args)
        rows.append(row)
        print(f"{report(row)}  {row['steps']} steps in {row['seconds']:.0f} s "
              f"({row['steps_per_s']:.2f} steps/s)", flush=True)
    for key in ("mse", "imputation_mse"):
        best = min(r[key] for r in rows[:n_baselines])
        for row in rows[n_baselines:]:
            print(f"{row['impl']:>16}: {key} / best baseline {key} = {row[key] / best:.3f}")
    if args.json:
        atomic_write_json(args.json, rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
