"""The DVAE family on the Bach chorales: STORN, SRNN, RVAE (both encoders), DSAE, DKF, VRNN.

Part 1, test NLL per time step: every model trains under the same CPU-time budget
(``TrainConfig.max_cpu_seconds``: a fair budget on a shared machine, where wall-clock
budgets depend on the other jobs) on the same split of dynvae's ``chorales`` dataset,
keeps its best validation parameters, and is scored on the test split by the ELBO
and by the importance-weighted bound with K samples.

Part 2, training speed: optimizer steps per CPU second (one thread) of every model at
the same sizes on one batch of binary rolls (B = 20, T = 64, D = 88), the models
alternating within each repeat so that all see the same machine load; medians and
ratios to the DKF.

    python benchmarks/family_chorales.py --budget-seconds 300 --json family.json
    python benchmarks/family_chorales.py --quick
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from chorales_results import DKF, SIZES, VRNN  # noqa: E402
from train_throughput import binary_sequences, time_interleaved  # noqa: E402

from dynvae.data.chorales import load_chorales  # noqa: E402
from dynvae.models.registry import model_class  # noqa: E402
from dynvae.train.metrics import evaluate_elbo, evaluate_iwae  # noqa: E402
from dynvae.train.trainer import TrainConfig, Trainer  # noqa: E402
from dynvae.utils import atomic_write_json  # noqa: E402

# the DKF's and the VRNN's sizes (chorales_results.py): latent Z = 32, recurrences of
# 128 units, hidden layers of 64, Bernoulli observation
FAMILY = dict(latent_dim=SIZES["z_dim"], hidden_size=SIZES["rnn_dim"],
              encoder_hidden=SIZES["rnn_dim"], mlp_hidden=(SIZES["emission_dim"],),
              observation="bernoulli")
MODELS = {
    "srnn": ("srnn", FAMILY),
    "storn": ("storn", FAMILY),
    "rvae-non-causal": ("rvae", dict(FAMILY, encoder="non-causal")),
    "rvae-causal": ("rvae", dict(FAMILY, encoder="causal")),
    "dsae": ("dsae", dict(FAMILY, static_dim=16)),
    "dkf": ("dkf", dict(DKF, encoder="backward")),
    "vrnn": ("vrnn", VRNN),
}


def build(name: str, seed: int):
    kind, config = MODELS[name]
    cls = model_class(kind)
    torch.manual_seed(seed)
    return cls.from_config(cls.Config(**config), 88, 0)


def train_and_score(name: str, data, args) -> dict:
    model = build(name, args.seed)
    cfg = TrainConfig(lr=args.lr, batch_size=args.batch_size, max_epochs=100_000,
                      max_cpu_seconds=args.budget_seconds, kl_anneal_steps=args.anneal_steps,
                      eval_every=args.eval_every, patience=None, seed=args.seed,
                      eval_batch_size=16, progress=False)
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    result = Trainer(model, cfg).fit(data["train"], data["valid"])
    wall = time.perf_counter() - start
    last = result.history[-1]
    elbo = evaluate_elbo(model, data["test"], batch_size=16, n_samples=args.k, seed=1)
    iwae = evaluate_iwae(model, data["test"], k=args.k, batch_size=16, seed=1)
    return dict(seconds=last["cpu_seconds"], wall_seconds=wall, steps=len(result.history),
                best_step=result.best_step, stopped=result.stopped,
                test_nll_elbo=-elbo.per_step, test_nll_iwae=-iwae.per_step,
                val_elbo_per_step=result.best_val, load_before=load_before,
                load_after=os.getloadavg()[0],
                n_params=sum(p.numel() for p in model.parameters()))


def train_step(name: str, batch, seed: int):
    model = build(name, seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-4)

    def step():
        optimizer.zero_grad(set_to_none=True)
        model.elbo(batch).loss().backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        optimizer.step()
    return step, sum(p.numel() for p in model.parameters())


def throughput(names: list[str], args) -> list[dict]:
    T = 32 if args.quick else 64
    n_steps, repeats = (2, 3) if args.quick else (3, 7)
    batch = binary_sequences(args.batch_size, T, 88)
    case = f"train step B={args.batch_size} T={T} D=88 Z={SIZES['z_dim']} H={SIZES['rnn_dim']}"
    built = {name: train_step(name, batch, args.seed) for name in names}
    rates = time_interleaved({k: v[0] for k, v in built.items()}, n_steps, repeats,
                             clock=time.process_time)
    rows = []
    for name in names:
        rate = statistics.median(rates[name])
        row = {"case": case, "impl": name, "seconds": 1.0 / rate, "clock": "cpu",
               "steps_per_s": rate, "n_params": built[name][1]}
        if "dkf" in rates:
            row["ratio_to_dkf"] = statistics.median(
                [a / b for a, b in zip(rates[name], rates["dkf"], strict=True)])
        rows.append(row)
    return rows


def print_tables(nll_rows: list[dict], speed_rows: list[dict]) -> None:
    if nll_rows:
        print(f"\n{'model':<18}{'steps':>7}{'CPU s':>8}{'wall s':>8}{'NLL/step ELBO':>15}"
              f"{'NLL/step IWAE':>15}")
        for r in nll_rows:
            print(f"{r['impl']:<18}{r['steps']:>7}{r['seconds']:>8.0f}{r['wall_seconds']:>8.0f}"
                  f"{r['test_nll_elbo']:>15.3f}{r['test_nll_iwae']:>15.3f}")
    if speed_rows:
        print(f"\n{speed_rows[0]['case']}, steps per CPU second\n"
              f"{'model':<18}{'steps/s':>9}{'x DKF':>8}{'params':>9}")
        for r in speed_rows:
            ratio = r.get("ratio_to_dkf", float("nan"))
            print(f"{r['impl']:<18}{r['steps_per_s']:>9.2f}{ratio:>8.2f}{r['n_params']:>9}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget-seconds", type=float, default=300.0,
                        help="CPU seconds of training per model")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--quick", action="store_true",
                        help="12 pieces, 4 CPU s per model, K=5, short throughput (a smoke run)")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--parts", default="nll,speed", help="nll, speed or both")
    parser.add_argument("--k", type=int, default=100, help="importance samples")
    parser.add_argument("--batch-size", type=int, default=20)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--anneal-steps", type=int, default=200)
    parser.add_argument("--eval-every", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-pieces", type=int, default=None)
    args = parser.parse_args(argv)
    if args.quick:
        args.budget_seconds, args.k, args.max_pieces, args.eval_every = 4.0, 5, 12, 5
    names = args.models.split(",")
    unknown = sorted(set(names) - set(MODELS))
    if unknown:
        parser.error(f"unknown models {unknown}; choose from {sorted(MODELS)}")
    print(f"torch threads: {torch.get_num_threads()}; load average {os.getloadavg()[0]:.1f}",
          flush=True)
    nll_rows, speed_rows = [], []
    if "nll" in args.parts:
        data = {s: load_chorales(s, max_pieces=args.max_pieces)
                for s in ("train", "valid", "test")}
        print(f"chorales: {', '.join(f'{s} {len(d)} pieces' for s, d in data.items())}; "
              f"{args.budget_seconds:g} CPU s per model, K={args.k}", flush=True)
        for name in names:
            row = {"case": "chorales", "impl": name, "budget_cpu_seconds": args.budget_seconds,
                   "k": args.k, **train_and_score(name, data, args)}
            nll_rows.append(row)
            print(json.dumps(row), flush=True)
    if "speed" in args.parts:
        speed_rows = throughput(names, args)
    print_tables(nll_rows, speed_rows)
    if args.json is not None:
        atomic_write_json(args.json, nll_rows + speed_rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
