"""``dynvae sample RUN -n N --steps T --out FILE``: draw sequences from a fitted model."""

from __future__ import annotations

import argparse
from pathlib import Path

from dynvae.commands import common
from dynvae.errors import ConfigError


def add_parser(sub) -> None:
    p = sub.add_parser("sample", help="draw new sequences from a fitted model",
                       description="Draw N sequences of T steps (t = 0..T-1) on the original "
                       "scale. FILE ending in .npy gets an (N, T, D) array; otherwise a CSV "
                       "with columns sample, step, then one column per feature.")
    p.add_argument("run_dir", metavar="RUN", help="run directory written by `dynvae train`")
    p.add_argument("-n", type=int, required=True, metavar="N", help="number of sequences")
    p.add_argument("--steps", type=int, required=True, metavar="T", help="steps per sequence")
    p.add_argument("--out", required=True, metavar="FILE", help=".npy or .csv file to write")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    common.add_device_arg(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.n < 1 or args.steps < 1:
        raise ConfigError(f"-n and --steps must be at least 1, got {args.n} and {args.steps}")
    import numpy as np
    import torch

    from dynvae.train import run as rundir
    from dynvae.utils import atomic_write_bytes, atomic_write_text, seed_everything
    rundir.check_writable(args.out, "--out")
    loaded = rundir.load_run(args.run_dir, args.device)
    seed_everything(args.seed)
    # a continuous-time model draws on the grid of the training data's median step
    step = loaded.config.get("data_choices", {}).get("time_irregularity", {}).get(
        "median_step", 1.0) if loaded.model.continuous_time else 1.0
    with torch.no_grad():
        draws = loaded.model.sample(args.n, step * torch.arange(args.steps,
                                                                dtype=torch.float64))
    x = loaded.standardizer.inverse_mean(draws.detach().cpu().double()).numpy()   # (N, T, D)
    if Path(args.out).suffix == ".npy":
        import io
        buf = io.BytesIO()
        np.save(buf, x)
        atomic_write_bytes(args.out, buf.getvalue())
    else:
        import pandas as pd
        names = loaded.standardizer.feature_names or [f"x{d}" for d in range(x.shape[-1])]
        frame = pd.DataFrame(x.reshape(-1, x.shape[-1]), columns=names)
        frame.insert(0, "step", np.tile(np.arange(args.steps), args.n))
        frame.insert(0, "sample", np.repeat(np.arange(args.n), args.steps))
        atomic_write_text(args.out, frame.to_csv(index=False))
    print(f"wrote {args.out} ({args.n} x {args.steps} x {x.shape[-1]})")
    return 0
