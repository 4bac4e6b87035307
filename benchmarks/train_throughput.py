"""Training throughput (optimizer steps per second): dynvae's DKF vs a Pyro DMM, and
dynvae's GP-VAE vs its DKF.

Case ``dmm``: both models have the published DMM architecture at the same sizes (gated
transition, MLP Bernoulli emitter, combiner over a backward RNN), the same batch of
binary sequences, Adam-type updates with gradient clipping. Case ``gpvae``: the GP-VAE
(Matern-3/2 channels) and the DKF at equal batch, latent and hidden sizes on one batch of
Gaussian sequences. One step = ELBO forward, backward and parameter update. Prints the
ratios dynvae / Pyro and GP-VAE / DKF (seconds per step).

    python benchmarks/train_throughput.py --quick --json throughput.json
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from dynvae.data.batch import SequenceBatch  # noqa: E402
from dynvae.models.registry import model_class  # noqa: E402
from dynvae.utils import atomic_write_json  # noqa: E402


def binary_sequences(batch: int, steps: int, dim: int, seed: int = 0) -> SequenceBatch:
    """(B, T, D) sparse binary rolls (about 4 keys on per step), full length."""
    gen = torch.Generator().manual_seed(seed)
    x = (torch.rand(batch, steps, dim, generator=gen) < 4.0 / dim).float()
    return SequenceBatch.from_tensor(x)


def time_interleaved(steps: dict, n_steps: int, repeats: int,
                     clock=time.perf_counter) -> dict[str, list[float]]:
    """Steps per second of each implementation, ``repeats`` times, the implementations
    alternating within every repeat so that all of them see the same machine load.
    ``clock``: wall clock by default; ``time.process_time`` counts this process's CPU
    time, which other jobs on a shared machine barely change."""
    for step in steps.values():
        step()
        step()  # warm-up
    rates: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            start = clock()
            for _ in range(n_steps):
                step()
            rates[name].append(n_steps / (clock() - start))
    return rates


def dynvae_step(sizes: dict, batch: SequenceBatch):
    cls = model_class("dkf")
    torch.manual_seed(0)
    model = cls.from_config(cls.Config(
        latent_dim=sizes["z_dim"], encoder="backward", transition="gated",
        observation="bernoulli", encoder_hidden=sizes["rnn_dim"],
        transition_hidden=(sizes["transition_dim"],),
        emission_hidden=(sizes["emission_dim"], sizes["emission_dim"]),
        initial_prior="learned"), batch.dim, 0)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-4)

    def step():
        optimizer.zero_grad(set_to_none=True)
        model.elbo(batch).loss().backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        optimizer.step()

    return step, sum(p.numel() for p in model.parameters())


def model_step(name: str, config: dict, batch: SequenceBatch):
    """One Adam step of registered model ``name`` built from ``config`` on ``batch``."""
    cls = model_class(name)
    torch.manual_seed(0)
    model = cls.from_config(config, batch.dim, 0)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

    def step():
        optimizer.zero_grad(set_to_none=True)
        model.elbo(batch).loss().backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        optimizer.step()

    return step, sum(p.numel() for p in model.parameters())


def gpvae_case(batch_size: int, steps: int, n_steps: int, repeats: int) -> list[dict]:
    """GP-VAE vs DKF at B, T, D = batch_size, steps, 6; Z = 8 latents, hidden width 64."""
    gen = torch.Generator().manual_seed(0)
    batch = SequenceBatch.from_tensor(torch.randn(batch_size, steps, 6, generator=gen))
    case = f"gpvae B={batch_size} T={steps} D=6 Z=8 H=64"
    configs = {
        "dynvae-dkf": ("dkf", dict(latent_dim=8, encoder_hidden=64, transition_hidden=(64,),
                                   emission_hidden=(64,))),
        "dynvae-gpvae": ("gpvae", dict(latent_dim=8, encoder_hidden=(64,),
                                       emission_hidden=(64,))),
    }
    built = {impl: model_step(name, cfg, batch) for impl, (name, cfg) in configs.items()}
    rates = time_interleaved({k: v[0] for k, v in built.items()}, n_steps, repeats)
    rows = [{"case": case, "impl": impl, "steps_per_s": statistics.median(rates[impl]),
             "seconds": 1.0 / statistics.median(rates[impl]), "n_params": built[impl][1]}
            for impl in built]
    ratios = [d / g for d, g in zip(rates["dynvae-dkf"], rates["dynvae-gpvae"], strict=True)]
    rows[1]["cost_vs_dkf"] = statistics.median(ratios)
    print(f"\n{case}\n{'impl':<14}{'steps/s':>10}{'s/step':>10}{'params':>10}")
    for r in rows:
        print(f"{r['impl']:<14}{r['steps_per_s']:>10.2f}{r['seconds']:>10.3f}"
              f"{r['n_params']:>10}")
    print(f"GP-VAE / DKF seconds per step, median over {repeats} interleaved repeats: "
          f"{rows[1]['cost_vs_dkf']:.2f}x (per repeat: {', '.join(f'{r:.2f}' for r in ratios)})")
    return rows


def pyro_step(sizes: dict, batch: SequenceBatch):
    import pyro
    import pyro_dmm

    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    dmm = pyro_dmm.PyroDMM(batch.dim, **sizes)
    svi = pyro_dmm.svi(dmm, lr=3e-4)
    x, valid = batch.x, batch.valid
    return (lambda: svi.step(x, valid, 1.0)), sum(p.numel() for p in dmm.parameters())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="T=32, fewer steps (< 1 min)")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--batch-size", type=int, default=20)
    parser.add_argument("--steps", type=int, default=None, help="sequence length T")
    parser.add_argument("--case", choices=["all", "dmm", "gpvae"], default="all")
    args = parser.parse_args(argv)
    T = args.steps or (32 if args.quick else 64)
    n_steps, repeats = (2, 5) if args.quick else (5, 7)
    rows = [] if args.case == "gpvae" else dmm_case(args, T, n_steps, repeats)
    if args.case != "dmm":
        rows += gpvae_case(args.batch_size, args.steps or (50 if args.quick else 100),
                           n_steps, repeats)
    if args.json is not None:
        atomic_write_json(args.json, rows)
    return 0


def dmm_case(args: argparse.Namespace, T: int, n_steps: int, repeats: int) -> list[dict]:
    """dynvae's DKF vs the Pyro DMM at the published DMM sizes."""
    sizes = dict(z_dim=32, emission_dim=64, transition_dim=64, rnn_dim=128)
    batch = binary_sequences(args.batch_size, T, 88)
    case = f"dmm B={args.batch_size} T={T} D=88 Z={sizes['z_dim']} H={sizes['rnn_dim']}"
    built = {"dynvae-dkf": dynvae_step(sizes, batch)}
    try:
        import pyro  # noqa: F401
    except ImportError:
        print("pyro-ppl is not installed: skipping the Pyro DMM")
    else:
        built["pyro-dmm"] = pyro_step(sizes, batch)
    rates = time_interleaved({k: v[0] for k, v in built.items()}, n_steps, repeats)
    rows = [{"case": case, "impl": name, "steps_per_s": statistics.median(rates[name]),
             "n_params": built[name][1]} for name in built]
    for row in rows:
        row["seconds"] = 1.0 / row["steps_per_s"]
    print(f"{case}\n{'impl':<12}{'steps/s':>10}{'s/step':>10}{'params':>10}")
    for r in rows:
        print(f"{r['impl']:<12}{r['steps_per_s']:>10.2f}{r['seconds']:>10.3f}{r['n_params']:>10}")
    if len(rows) == 2:
        ratios = [a / b for a, b in zip(rates["dynvae-dkf"], rates["pyro-dmm"], strict=True)]
        rows[0]["speedup_vs_pyro"] = statistics.median(ratios)
        print(f"dynvae / pyro steps per second, median over {repeats} interleaved repeats: "
              f"{rows[0]['speedup_vs_pyro']:.2f}x (per repeat: "
              f"{', '.join(f'{r:.2f}' for r in ratios)})")
    return rows


if __name__ == "__main__":
    raise SystemExit(main())
