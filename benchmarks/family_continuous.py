"""KVAE and latent ODE beside the DKF and the VRNN on irregularly sampled data with
missing values: imputation against linear interpolation, test bounds, training speed.

Data (standardised with the training split's moments; split 70/15/15 by sequence):
* ``lorenz``: dynvae's ``stochastic-lorenz`` (64 paths, 100 points on [0, 2]) with 30% of
  the time points dropped per path and 20% of the remaining entries hidden;
* ``vowels``: the Japanese vowels (sktime; 640 utterances x 12 LPC cepstra, 7-29 frames)
  made irregular the same way: 30% of the frames dropped (times = frame indices), 20% of
  the remaining entries hidden.

Part 1: every model trains under the same CPU-time budget (``TrainConfig.max_cpu_seconds``,
fair on a shared machine) on the same split (best
validation parameters kept) and is scored on the test split:
* ``entries``: MSE of the imputed hidden entries (truth: the same data before hiding);
* ``frames``: 30% of the observed test frames (never the first) hidden whole, MSE of
  their observed entries;
* the test ELBO and IWAE bound per time step (K samples).
The baseline of both imputations is linear interpolation in time of each channel over
the entries still observed (constant beyond the ends), on each sequence's own times.

Part 2: optimizer steps per second of each model at the sizes of part 1 on one batch
of the lorenz data (B = 16), the models alternating within each repeat.

    python benchmarks/family_continuous.py --budget-seconds 240 --json family_continuous.json
    python benchmarks/family_continuous.py --quick
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from train_throughput import time_interleaved  # noqa: E402

from dynvae.data import SequenceDataset, Standardizer  # noqa: E402
from dynvae.data.dataset import Sequence  # noqa: E402
from dynvae.data.synthetic import stochastic_lorenz  # noqa: E402
from dynvae.models.registry import model_class  # noqa: E402
from dynvae.train.metrics import evaluate_elbo, evaluate_iwae  # noqa: E402
from dynvae.train.trainer import TrainConfig, Trainer  # noqa: E402
from dynvae.utils import atomic_write_json  # noqa: E402

Z, H = 8, 64  # latent / state size and hidden width of every model
MODELS = {
    "dkf": ("dkf", dict(latent_dim=Z, encoder_hidden=H, transition_hidden=(H,),
                        emission_hidden=(H,))),
    "vrnn": ("vrnn", dict(latent_dim=Z, hidden_size=H, feature_size=H // 2,
                          mlp_hidden=(H,))),
    "kvae": ("kvae", dict(state_dim=Z, pseudo_dim=4, n_matrices=3, dynamics_hidden=H // 2,
                          encoder_hidden=(H,), emission_hidden=(H,))),
    "latent-ode": ("latent-ode", dict(latent_dim=Z, encoder_hidden=H,
                                      encoder_field_hidden=(H,), field_hidden=(H,),
                                      emission_hidden=(H,))),
}
DROP, MISSING, HIDE_FRAMES = 0.3, 0.2, 0.3


# ------------------------------------------------------------------------------ data
def irregular(sequences: list[tuple[np.ndarray, np.ndarray]], seed: int
              ) -> tuple[list[Sequence], list[Sequence]]:
    """(observed, complete): each sequence (t, x) with DROP of its steps removed (the first
    kept), and MISSING of the remaining entries hidden in ``observed`` only."""
    rng = np.random.default_rng(seed)
    observed, complete = [], []
    for i, (t, x) in enumerate(sequences):
        keep = rng.random(len(t)) >= DROP
        keep[0] = True
        t, x = t[keep], x[keep]
        hidden = x.copy()
        hidden[rng.random(x.shape) < MISSING] = np.nan
        if np.isnan(hidden[0]).all():                             # never an empty first frame
            hidden[0, 0] = x[0, 0]
        observed.append(Sequence(t, hidden, id=str(i)))
        complete.append(Sequence(t, x, id=str(i)))
    return observed, complete


def load_case(case: str, quick: bool) -> tuple[list[Sequence], list[Sequence], list[str]]:
    if case == "lorenz":
        full = stochastic_lorenz(n=16 if quick else 64, drop=0.0, missing=0.0, seed=0)
        seqs = [(s.t, s.x) for s in full.sequences]
        names = full.feature_names
    else:
        from sktime.datasets import load_japanese_vowels
        X, _ = load_japanese_vowels(return_X_y=True)
        n = 40 if quick else len(X)
        seqs = [(np.arange(len(X.iloc[i, 0]), dtype=np.float64),
                 np.stack([X.iloc[i, d].to_numpy() for d in range(X.shape[1])], 1))
                for i in range(n)]
        names = [f"c{d}" for d in range(X.shape[1])]
    observed, complete = irregular(seqs, seed=1)
    return observed, complete, names


def splits(case: str, quick: bool) -> dict:
    """Standardised train/valid/test, the test truth, and the frames-hidden test set."""
    observed, complete, names = load_case(case, quick)
    order = np.random.default_rng(2).permutation(len(observed))
    n_train, n_valid = int(0.7 * len(order)), int(0.15 * len(order))
    parts = {"train": order[:n_train], "valid": order[n_train:n_train + n_valid],
             "test": order[n_train + n_valid:]}
    data = {k: SequenceDataset([observed[i] for i in idx], names) for k, idx in parts.items()}
    scaler = Standardizer().fit(data["train"])
    out = {k: scaler.transform(v) for k, v in data.items()}
    out["truth"] = scaler.transform(SequenceDataset([complete[i] for i in parts["test"]],
                                                    names))
    out["frames"], out["frames_truth"] = hide_frames(out["test"], seed=3)
    return out


def hide_frames(data: SequenceDataset, seed: int) -> tuple[SequenceDataset, SequenceDataset]:
    rng = np.random.default_rng(seed)
    hidden = []
    for s in data.sequences:
        x = s.x.copy()
        drop = rng.random(len(s.t)) < HIDE_FRAMES
        drop[0] = False
        x[drop] = np.nan
        hidden.append(Sequence(s.t, x, id=s.id))
    return SequenceDataset(hidden, data.feature_names), data


def interpolation_mse(observed: SequenceDataset, truth: SequenceDataset) -> float:
    """Linear interpolation in time of each channel over its observed entries."""
    sq, count = 0.0, 0
    for s, full in zip(observed.sequences, truth.sequences, strict=True):
        for d in range(s.x.shape[1]):
            seen, target = ~np.isnan(s.x[:, d]), np.isnan(s.x[:, d]) & ~np.isnan(full.x[:, d])
            if not target.any():
                continue
            guess = np.interp(s.t[target], s.t[seen], s.x[seen, d]) if seen.any() else 0.0
            sq += float(((guess - full.x[target, d]) ** 2).sum())
            count += int(target.sum())
    return sq / count


@torch.no_grad()
def imputation_mse(model, observed: SequenceDataset, truth: SequenceDataset) -> float:
    sq, count = 0.0, 0
    for start in range(0, len(observed), 32):
        idx = list(range(start, min(start + 32, len(observed))))
        batch = observed.to_batch(idx)
        full = truth.to_batch(idx)
        target = batch.valid[..., None] & ~batch.mask & full.mask
        mean = model.reconstruct(batch).mean
        sq += float(((mean - full.x) ** 2)[target].sum())
        count += int(target.sum())
    return sq / count


# ---------------------------------------------------------------------------- models
def build(name: str, dim: int, seed: int):
    kind, config = MODELS[name]
    torch.manual_seed(seed)
    return model_class(kind).from_config(config, dim, 0)


def train_and_score(name: str, data: dict, args) -> dict:
    model = build(name, data["train"].dim, args.seed)
    cfg = TrainConfig(lr=args.lr, batch_size=args.batch_size, max_epochs=100_000,
                      max_cpu_seconds=args.budget_seconds, kl_anneal_steps=args.anneal_steps,
                      eval_every=args.eval_every, patience=None, seed=args.seed,
                      eval_batch_size=32, progress=False)
    cpu, wall = time.process_time(), time.perf_counter()
    result = Trainer(model, cfg).fit(data["train"], data["valid"])
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    model.eval()
    torch.manual_seed(1)
    elbo = evaluate_elbo(model, data["test"], batch_size=32, n_samples=args.k, seed=1)
    iwae = evaluate_iwae(model, data["test"], k=args.k, batch_size=32, seed=1)
    return dict(steps=len(result.history), best_step=result.best_step, cpu_seconds=cpu,
                wall_seconds=wall, steps_per_cpu_s=len(result.history) / cpu,
                test_elbo_per_step=elbo.per_step, test_iwae_per_step=iwae.per_step,
                entries_mse=imputation_mse(model, data["test"], data["truth"]),
                frames_mse=imputation_mse(model, data["frames"], data["frames_truth"]))


def throughput(names: list[str], data: dict, args) -> list[dict]:
    batch = data["train"].to_batch(list(range(min(16, len(data["train"])))))
    built = {}
    for name in names:
        model = build(name, batch.dim, args.seed)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

        def step(model=model, optimizer=optimizer):
            optimizer.zero_grad(set_to_none=True)
            model.elbo(batch).loss().backward()
            optimizer.step()
        built[name] = step
    n_steps, repeats = (1, 2) if args.quick else (3, 5)
    rates = time_interleaved(built, n_steps, repeats)
    case = f"train step lorenz B={batch.batch_size} T={batch.n_steps} D={batch.dim} Z={Z} H={H}"
    rows = []
    for name in names:
        rate = statistics.median(rates[name])
        row = {"case": case, "impl": name, "seconds": 1.0 / rate, "steps_per_s": rate}
        if "dkf" in rates:
            row["ratio_to_dkf"] = statistics.median(
                [a / b for a, b in zip(rates[name], rates["dkf"], strict=True)])
        rows.append(row)
    return rows


def print_tables(rows: list[dict], speed: list[dict]) -> None:
    head = (f"{'case':<8}{'model':<22}{'steps':>7}{'CPU s':>7}{'entries MSE':>13}"
            f"{'frames MSE':>12}{'ELBO/step':>11}{'IWAE/step':>11}")
    print("\n" + head)
    for r in rows:
        fmt = lambda key, r=r: f"{r[key]:.3f}" if key in r else "-"
        steps = str(r.get("steps", "-"))
        cpu = f"{r['cpu_seconds']:.0f}" if "cpu_seconds" in r else "-"
        print(f"{r['case']:<8}{r['impl']:<22}{steps:>7}{cpu:>7}{fmt('entries_mse'):>13}"
              f"{fmt('frames_mse'):>12}{fmt('test_elbo_per_step'):>11}"
              f"{fmt('test_iwae_per_step'):>11}")
    if speed:
        print(f"\n{speed[0]['case']}\n{'model':<12}{'steps/s':>9}{'x DKF':>8}")
        for r in speed:
            print(f"{r['impl']:<12}{r['steps_per_s']:>9.2f}{r.get('ratio_to_dkf', np.nan):>8.2f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget-seconds", type=float, default=240.0,
                        help="CPU seconds of training per model and dataset")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--quick", action="store_true", help="small data, 3 s per model")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--cases", default="lorenz,vowels")
    parser.add_argument("--parts", default="quality,speed")
    parser.add_argument("--k", type=int, default=50, help="importance samples")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--anneal-steps", type=int, default=100)
    parser.add_argument("--eval-every", type=int, default=25)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.quick:
        args.budget_seconds, args.k, args.eval_every = 3.0, 4, 5
    names = args.models.split(",")
    unknown = sorted(set(names) - set(MODELS))
    if unknown:
        parser.error(f"unknown models {unknown}; choose from {sorted(MODELS)}")
    print(f"torch threads {torch.get_num_threads()}; load average {os.getloadavg()[0]:.1f}",
          flush=True)
    rows, speed = [], []
    for case in args.cases.split(","):
        data = splits(case, args.quick)
        if "quality" in args.parts:
            rows.append({"case": case, "impl": "linear interpolation", "seconds": 0.0,
                         "entries_mse": interpolation_mse(data["test"], data["truth"]),
                         "frames_mse": interpolation_mse(data["frames"],
                                                         data["frames_truth"])})
            print(json.dumps(rows[-1]), flush=True)
            for name in names:
                row = {"case": case, "impl": name, **train_and_score(name, data, args)}
                row["seconds"] = row["cpu_seconds"]
                rows.append(row)
                print(json.dumps(row), flush=True)
        if "speed" in args.parts and case == "lorenz":
            speed = throughput(names, data, args)
    print_tables(rows, speed)
    if args.json is not None:
        atomic_write_json(args.json, rows + speed)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
