"""``dynvae sample RUN -n N --steps T --out FILE``: draw sequences from a fitted model;
for a run on image frames also ``--gif FILE.gif`` and ``--strip FILE.png``."""

from __future__ import annotations

import argparse
from pathlib import Path

from dynvae.commands import common, frame_outputs
from dynvae.errors import ConfigError


def add_parser(sub) -> None:
    p = sub.add_parser("sample", help="draw new sequences from a fitted model",
                       description="Draw N sequences of T steps on the original scale, at "
                       "t = 0, dt, ..., (T-1) dt: dt = 1 for a discrete-time model, the "
                       "training data's median step (config.json's median_step) for a "
                       "continuous-time one. FILE ending in .npy gets an (N, T, D) array; "
                       "otherwise a CSV with columns sample, step, t (continuous-time "
                       "models), then one column per feature. For a run "
                       "trained on image frames, --gif writes an animated GIF (the N samples "
                       "side by side, one image per step) and --strip a PNG (one row per "
                       "sample, one column per step).")
    p.add_argument("run_dir", metavar="RUN", help="run directory written by `dynvae train`")
    p.add_argument("-n", type=int, required=True, metavar="N", help="number of sequences")
    p.add_argument("--steps", type=int, required=True, metavar="T", help="steps per sequence")
    p.add_argument("--out", metavar="FILE", help=".npy or .csv file to write")
    p.add_argument("--gif", metavar="FILE", help="animated GIF of the samples (image frames)")
    p.add_argument("--strip", metavar="FILE", help="PNG strip of the samples, rows = samples, "
                   "columns = steps (image frames)")
    common.add_force_arg(p, "existing --out, --gif and --strip files")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    common.add_device_arg(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.n < 1 or args.steps < 1:
        raise ConfigError(f"-n and --steps must be at least 1, got {args.n} and {args.steps}")
    if not (args.out or args.gif or args.strip):
        raise ConfigError("give --out FILE, --gif FILE or --strip FILE")
    import torch

    from dynvae.train import run as rundir
    from dynvae.train.evaluation import model_dtype
    from dynvae.utils import seed_everything
    frame_outputs.check_frame_suffixes(args)
    common.check_outputs(args)
    common.apply_threads(args)
    loaded = rundir.load_run(args.run_dir, args.device)
    shape = None
    if args.gif or args.strip:
        shape = frame_outputs.run_frame_shape(loaded.config, "--gif" if args.gif else "--strip")
    seed_everything(args.seed)
    # a continuous-time model draws on the grid of the training data's median step
    # (config.json's median_step; runs written before it: the LGSSM's measurement, or 1)
    step = loaded.config.get("median_step", loaded.config.get("data_choices", {}).get(
        "time_irregularity", {}).get("median_step", 1.0)) if loaded.model.continuous_time \
        else 1.0
    with torch.no_grad():
        draws = loaded.model.sample(args.n, step * torch.arange(
            args.steps, dtype=model_dtype(loaded.model)))
    x = loaded.standardizer.inverse_mean(draws.detach().cpu().double()).numpy()   # (N, T, D)
    written = []
    if shape is not None:
        from dynvae.plots.video import write_gif, write_strip
        frames = frame_outputs.as_frames(x, shape)                              # (N, T, C, H, W)
        for path, write in ((args.gif, write_gif), (args.strip, write_strip)):
            if path:
                write(frames, path)
                written.append(path)
    if args.out:
        _write_samples(args.out, x, loaded.standardizer.feature_names,
                       step if loaded.model.continuous_time else None)
        written.insert(0, args.out)
    print(f"wrote {', '.join(written)} ({args.n} x {args.steps} x {x.shape[-1]})")
    return 0


def _write_samples(path: str, x, names: list[str] | None, dt: float | None = None) -> None:
    """--out: samples x (N, T, D) as .npy, or a CSV with columns sample, step, (for a
    continuous-time model, ``dt`` given: t = step * dt, in the data's time unit)
    features."""
    import numpy as np

    from dynvae.utils import atomic_write_bytes, atomic_write_text
    N, T, D = x.shape
    if Path(path).suffix == ".npy":
        import io
        buf = io.BytesIO()
        np.save(buf, x)
        atomic_write_bytes(path, buf.getvalue())
    else:
        import pandas as pd
        frame = pd.DataFrame(x.reshape(-1, D), columns=names or [f"x{d}" for d in range(D)])
        if dt is not None:
            frame.insert(0, "t", np.tile(np.arange(T) * dt, N))
        frame.insert(0, "step", np.tile(np.arange(T), N))
        frame.insert(0, "sample", np.repeat(np.arange(N), T))
        atomic_write_text(path, frame.to_csv(index=False))
