"""Test NLL per time step on the Bach chorales: DKF (each encoder), VRNN and a Pyro DMM.

``dkf-backward-iaf`` is the backward-encoder DKF whose posterior factors are followed by
IAF_STEPS inverse autoregressive flow steps (``posterior_flow``), sizes otherwise equal.

Every model trains for the same wall-clock budget on the same split (dynvae's
``chorales`` dataset), keeps its best validation parameters, and is scored on the
test split by the ELBO and by the importance-weighted bound with K samples.

    python benchmarks/chorales_results.py --budget-seconds 150 --json results.json
    python benchmarks/chorales_results.py --quick
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from dynvae.data.chorales import load_chorales  # noqa: E402
from dynvae.models.registry import model_class  # noqa: E402
from dynvae.train.history import kl_weight  # noqa: E402
from dynvae.train.metrics import evaluate_elbo, evaluate_iwae  # noqa: E402
from dynvae.train.trainer import TrainConfig, Trainer  # noqa: E402
from dynvae.utils import atomic_write_json  # noqa: E402

SIZES = dict(z_dim=32, emission_dim=64, transition_dim=64, rnn_dim=128)
DKF = dict(latent_dim=SIZES["z_dim"], transition="gated", observation="bernoulli",
           encoder_hidden=SIZES["rnn_dim"], transition_hidden=(SIZES["transition_dim"],),
           emission_hidden=(SIZES["emission_dim"], SIZES["emission_dim"]),
           initial_prior="learned")
VRNN = dict(latent_dim=SIZES["z_dim"], hidden_size=SIZES["rnn_dim"],
            feature_size=SIZES["emission_dim"], mlp_hidden=(SIZES["emission_dim"],),
            observation="bernoulli")
MODELS = {f"dkf-{e}": ("dkf", dict(DKF, encoder=e))
          for e in ("backward", "local", "filtering", "bidirectional")}
MODELS["vrnn"] = ("vrnn", VRNN)
IAF_STEPS = 2
MODELS["dkf-backward-iaf"] = ("dkf", dict(DKF, encoder="backward", posterior_flow=IAF_STEPS,
                                          flow_hidden=SIZES["transition_dim"]))


def train_dynvae(name: str, data, args) -> dict:
    kind, config = MODELS[name]
    cls = model_class(kind)
    torch.manual_seed(args.seed)
    model = cls.from_config(cls.Config(**config), 88, 0)
    cfg = TrainConfig(lr=args.lr, batch_size=args.batch_size, max_epochs=100_000,
                      max_seconds=args.budget_seconds, max_steps=args.max_steps,
                      kl_anneal_steps=args.anneal_steps,
                      eval_every=args.eval_every, patience=None, seed=args.seed,
                      eval_batch_size=16, progress=False)
    start = time.perf_counter()
    result = Trainer(model, cfg).fit(data["train"], data["valid"])
    seconds = time.perf_counter() - start
    elbo = evaluate_elbo(model, data["test"], batch_size=16, n_samples=args.k, seed=1)
    iwae = evaluate_iwae(model, data["test"], k=args.k, batch_size=16, seed=1)
    return dict(seconds=seconds, steps=len(result.history), best_step=result.best_step,
                test_nll_elbo=-elbo.per_step, test_nll_iwae=-iwae.per_step,
                val_elbo_per_step=result.best_val)


def train_pyro_dmm(data, args) -> dict:
    import pyro
    import pyro_dmm

    pyro.clear_param_store()
    pyro.set_rng_seed(args.seed)
    dmm = pyro_dmm.PyroDMM(88, **SIZES)
    svi = pyro_dmm.svi(dmm, lr=args.lr)
    train, n_train = data["train"], len(data["train"])
    gen = torch.Generator().manual_seed(args.seed)
    best, best_val, steps, best_step = None, -math.inf, 0, None
    start = time.perf_counter()
    while time.perf_counter() - start < args.budget_seconds:
        perm = torch.randperm(n_train, generator=gen).tolist()
        for i in range(0, n_train, args.batch_size):
            x, valid = pyro_dmm.dense(train, perm[i:i + args.batch_size])
            # poutine.scale needs a positive factor: the warm-up starts at 1e-4, not 0
            kl_scale = max(1e-4, kl_weight(steps, args.anneal_steps))
            svi.step(x, valid, kl_scale)
            steps += 1
            if steps % args.eval_every == 0:
                val = _pyro_bound(dmm, data["valid"], 1)[0]
                if val > best_val:
                    best, best_val, best_step = copy.deepcopy(dmm.state_dict()), val, steps
            if time.perf_counter() - start >= args.budget_seconds:
                break
    seconds = time.perf_counter() - start
    if best is not None:
        dmm.load_state_dict(best)
    elbo, iwae = _pyro_bound(dmm, data["test"], args.k)
    return dict(seconds=seconds, steps=steps, best_step=best_step, test_nll_elbo=-elbo,
                test_nll_iwae=-iwae, val_elbo_per_step=best_val if best else None)


def _pyro_bound(dmm, dataset, k: int) -> tuple[float, float]:
    """ELBO and IWAE(k) of ``dataset`` per time step."""
    import pyro_dmm

    torch.manual_seed(1)
    total_elbo = total_iwae = 0.0
    n_steps = 0
    for i in range(0, len(dataset), 16):
        x, valid = pyro_dmm.dense(dataset, list(range(i, min(i + 16, len(dataset)))))
        elbo, iwae = pyro_dmm.bounds(dmm, x, valid, k)
        total_elbo += float(elbo.sum())
        total_iwae += float(iwae.sum())
        n_steps += int(valid.sum())
    return total_elbo / n_steps, total_iwae / n_steps


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget-seconds", type=float, default=180.0)
    parser.add_argument("--max-steps", type=int, default=None,
                        help="also stop dynvae models after this many optimizer steps")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--quick", action="store_true",
                        help="12 pieces, 5 s per model, K=5 (a smoke run)")
    parser.add_argument("--models", default=",".join([*MODELS, "pyro-dmm"]))
    parser.add_argument("--k", type=int, default=100, help="importance samples")
    parser.add_argument("--batch-size", type=int, default=20)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--anneal-steps", type=int, default=300)
    parser.add_argument("--eval-every", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-pieces", type=int, default=None)
    args = parser.parse_args(argv)
    if args.quick:
        args.budget_seconds, args.k, args.max_pieces, args.eval_every = 5.0, 5, 12, 5
    data = {s: load_chorales(s, max_pieces=args.max_pieces) for s in ("train", "valid", "test")}
    print(f"chorales: {', '.join(f'{s} {len(d)} pieces' for s, d in data.items())}; "
          f"budget {args.budget_seconds:g} s per model, K={args.k}", flush=True)
    rows = []
    for name in args.models.split(","):
        if name == "pyro-dmm":
            try:
                import pyro  # noqa: F401
            except ImportError:
                print("pyro-ppl is not installed: skipping pyro-dmm")
                continue
            out = train_pyro_dmm(data, args)
        else:
            out = train_dynvae(name, data, args)
        row = {"case": "chorales", "impl": name, "budget_seconds": args.budget_seconds,
               "max_steps": args.max_steps,
               "k": args.k, **out}
        rows.append(row)
        print(json.dumps(row), flush=True)
    print(f"\n{'model':<20}{'steps':>8}{'NLL/step ELBO':>16}{'NLL/step IWAE':>16}")
    for r in rows:
        print(f"{r['impl']:<20}{r['steps']:>8}{r['test_nll_elbo']:>16.3f}"
              f"{r['test_nll_iwae']:>16.3f}")
    if args.json is not None:
        atomic_write_json(args.json, rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
