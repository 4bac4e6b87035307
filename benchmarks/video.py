"""Next-frames forecasting on moving-mnist: conv vs MLP frame models vs two baselines.

Each model (DKF and VRNN, each with conv frames and with MLP frames, Bernoulli pixels)
is trained for the same wall-clock budget on moving-mnist training sequences; on the
test sequences it sees the first ``--context`` frames and forecasts the next
``--horizon`` (posterior predictive mean). Scores: per-pixel MSE and Bernoulli
cross-entropy of the forecast frames against the true frames, and training steps per
second. Baselines: the mean training frame, copy-last-frame and linear-in-time
extrapolation of the last two frames (clipped to [0, 1]).

    PYTHONPATH=src python benchmarks/video.py [--quick] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from dynvae.data import load_dataset
from dynvae.data.dataset import Sequence, SequenceDataset
from dynvae.models.registry import model_class
from dynvae.train.trainer import TrainConfig, Trainer

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


def baselines(train: SequenceDataset, test: SequenceDataset, context: int,
              horizon: int) -> list[dict]:
    x = np.stack([s.x for s in test])                                      # (N, T, D)
    mean_frame = np.concatenate([s.x for s in train]).mean(0)              # (D,)
    last, before = x[:, context - 1], x[:, context - 2]
    truth = x[:, context:context + horizon]
    k = np.arange(1, horizon + 1)[None, :, None]
    copy = np.repeat(last[:, None], horizon, 1)
    linear = np.clip(last[:, None] + k * (last - before)[:, None], 0.0, 1.0)
    mean = np.broadcast_to(mean_frame, truth.shape)
    return [dict(case="moving-mnist", impl="mean-frame", seconds=0.0, **scores(mean, truth)),
            dict(case="moving-mnist", impl="copy-last-frame", seconds=0.0, **scores(copy, truth)),
            dict(case="moving-mnist", impl="linear-in-time", seconds=0.0,
                 **scores(linear, truth))]


def train_and_forecast(name: str, train, valid, test, args) -> dict:
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
    return dict(case="moving-mnist", impl=name, seconds=seconds, steps=steps,
                steps_per_s=steps / seconds, **scores(pred, truth))


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
    rows = baselines(train, test, args.context, args.horizon)
    n_baselines = len(rows)
    for row in rows:
        print(f"{row['impl']:>16}: mse {row['mse']:.4f}  bce {row['bce']:.4f}", flush=True)
    for name in args.models.split(","):
        row = train_and_forecast(name, train, valid, test, args)
        rows.append(row)
        print(f"{name:>16}: mse {row['mse']:.4f}  bce {row['bce']:.4f}  "
              f"{row['steps']} steps in {row['seconds']:.0f} s "
              f"({row['steps_per_s']:.2f} steps/s)", flush=True)
    best = min(r["mse"] for r in rows[:n_baselines])
    for row in rows[n_baselines:]:
        print(f"{row['impl']:>16}: MSE / best baseline MSE = {row['mse'] / best:.3f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
