"""``dynvae forecast RUN --data FILE --horizon H --out CSV``: predict the next H steps
(or at the times ``--at``)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from dynvae.commands import common, frame_outputs
from dynvae.errors import ConfigError, DataError

if TYPE_CHECKING:
    import numpy as np


def add_parser(sub) -> None:
    p = sub.add_parser("forecast", help="forecast the steps after each sequence",
                       description="Forecast H steps after the last time of every sequence, "
                       "at t_last + k dt (k = 1..H, dt = the sequence's median step). Writes "
                       "a CSV with id, step, t, feature, mean, std on the original scale (plus a "
                       "timestamp column after t when the times are dates). --at forecasts "
                       "at given times instead (any times after the end for a "
                       "continuous-time model). For image frames, --frames FILE.npy also "
                       "writes the forecast means as frames (N, H, C, H, W); FILE.npz holds "
                       "the arrays mean, std (each (N, H, C, H, W)) and t (N, H).")
    common.add_prediction_args(p, plot_help="also plot the first sequence's forecast")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--horizon", type=int, metavar="H",
                      help="number of steps to forecast (>= 1)")
    what.add_argument("--at", metavar="T1,T2", help="forecast at these times (numbers in "
                      "the data's time unit, or dates), after every sequence's last time")
    p.add_argument("--frames", metavar="FILE", help="also write the forecast frames of image "
                   "data: .npy (N, H, C, H, W) means, or .npz with mean, std and t")
    common.add_force_arg(p, "existing --out, --plot and --frames files")
    p.set_defaults(run=run)


def future_times(data, horizon: int, continuous_time: bool = False) -> np.ndarray:
    """(B, H) times t_last + k dt, dt the median step of each sequence (1 if one step):
    the step a discrete-time model takes per row. For a continuous-time model, the step
    of the grid the sequence lies on (dynvae.data.timing.grid_step: hourly data with
    most hours missing forecast by the hour, not by its 2-hour median gap)."""
    import numpy as np

    from dynvae.data.timing import grid_step
    rows = []
    for seq in data:
        steps = np.diff(seq.t)
        dt = 1.0 if len(seq) < 2 else grid_step(steps) if continuous_time \
            else float(np.median(steps))
        rows.append(seq.t[-1] + dt * np.arange(1, horizon + 1))
    return np.stack(rows)


def run(args: argparse.Namespace) -> int:
    import torch
    with torch.no_grad():
        return _forecast(args)


def _forecast(args: argparse.Namespace) -> int:
    import numpy as np
    import pandas as pd
    import torch

    from dynvae import plots
    from dynvae.commands.report import bernoulli_model, display_times, time_columns, time_label
    from dynvae.commands.times import parse_times
    from dynvae.utils import atomic_write_text
    if args.horizon is not None and args.horizon < 1:
        raise ConfigError(f"--horizon must be at least 1, got {args.horizon}")
    frame_outputs.check_frame_suffixes(args)
    if not (args.out or args.frames):
        raise ConfigError("give --out CSV or --frames FILE")
    loaded, data = common.load_run_and_data(args)
    shape = frame_outputs.data_frame_shape(data, "--frames") if args.frames else None
    std = loaded.standardizer
    if args.at is None:
        t_future = future_times(data, args.horizon, loaded.model.continuous_time)
    else:
        at = parse_times(args.at, data)
        check_at_times(args.at, at, data, loaded.model.continuous_time)
        t_future = np.broadcast_to(at, (len(data), at.size)).copy()
    horizon = t_future.shape[1]
    warn_beyond_training(loaded.config, data, t_future)
    from dynvae.train.evaluation import checked, chunks, model_dtype, prediction_chunk
    dtype = model_dtype(loaded.model)
    scaled, t_all = std.transform(data), torch.as_tensor(t_future, dtype=dtype)
    preds = [checked(loaded.model.forecast(scaled.to_batch(idx, dtype=dtype),
                                           t_all[idx]),
                     loaded.model, "forecast", [data.ids[i] for i in idx])
             for idx in chunks(len(data), prediction_chunk(loaded.model, data))]
    cat = lambda name: torch.cat([getattr(p, name).detach().cpu().double() for p in preds])
    mean, sd = std.inverse_mean(cat("mean")).numpy(), std.inverse_std(cat("std")).numpy()
    steps = np.arange(1, horizon + 1)
    if args.out:
        rows = [pd.DataFrame({"id": seq.id, "step": steps, **time_columns(data, t_future[b]),
                              "feature": name, "mean": mean[b, :, d], "std": sd[b, :, d]})
                for b, seq in enumerate(data) for d, name in enumerate(data.feature_names)]
        atomic_write_text(args.out, pd.concat(rows, ignore_index=True).to_csv(index=False))
    if shape is not None:
        as_frames = lambda v: frame_outputs.as_frames(v, shape)              # (N, H, C, H, W)
        frame_outputs.write_frame_arrays(args.frames, as_frames(mean), mean=as_frames(mean),
                                         std=as_frames(sd), t=t_future)
    if args.plot:
        plots.plot_forecast(display_times(data, data[0].t), data[0].x,
                            display_times(data, t_future[0]), mean[0], sd[0],
                            data.feature_names, args.plot,
                            title=f"forecast of sequence {data[0].id!r}",
                            time_label=time_label(data, common.data_spec(
                                args, fallback=loaded.config["data"])),
                            binary=bernoulli_model(loaded.model),
                            frame_shape=getattr(data, "frame_shape", None))
    files = " and ".join(f for f in (args.out, args.frames) if f)
    print(f"wrote {files} ({len(data)} sequence(s), {horizon} steps)")
    return 0


def warn_beyond_training(config: dict, data, t_future) -> None:
    """One warning line when a forecast reaches further past a sequence's end than a
    training example spans (config.json's trained_span): there the model's dynamics
    (its drift, field or transition networks) run where no training data took them."""
    import sys

    import numpy as np
    span = config.get("trained_span")
    if not span:
        return
    last = np.array([seq.t[-1] for seq in data])
    ahead = float(np.max(t_future - last[:, None]))
    if ahead > span:
        print(f"dynvae forecast: warning: the forecast reaches {ahead:g} time units past "
              f"a sequence's end, beyond the {span:g} that a training example spans: the "
              f"model's dynamics extrapolate there", file=sys.stderr)


def check_at_times(text: str, at, data, continuous_time: bool) -> None:
    """--at times against every sequence, naming the time as given and the sequence by
    its id: each after the sequence's end and, for a discrete-time model, on its grid
    t_last + k dt (dt its median step)."""
    import numpy as np

    from dynvae.models.common import STEP_TOLERANCE
    given = [p.strip() for p in text.split(",") if p.strip()]

    def shown(t: float) -> str:               # a time as the data gives it: a date or a number
        if data.time_origin is None:
            return f"{t:g}"
        import pandas as pd
        stamp = str(pd.Timestamp(data.to_timestamps(np.array([t]))[0]))
        return stamp.removesuffix(" 00:00:00")
    for seq in data:
        t_last = float(seq.t[-1])
        if at[0] <= t_last:
            raise DataError(f"--at {given[0]}: not after the end of sequence {seq.id!r} (its "
                            f"last time is {shown(t_last)}); a forecast starts after each "
                            f"sequence's end")
        if continuous_time:
            continue
        dt = float(np.median(np.diff(seq.t))) if len(seq.t) > 1 else 1.0
        ratio = (at - t_last) / dt
        off = np.abs(ratio - np.round(ratio)) > STEP_TOLERANCE
        if off.any():
            h = int(np.flatnonzero(off)[0])
            raise DataError(f"--at {given[h]}: the model is discrete-time and forecasts at "
                            f"t_last + k dt; sequence {seq.id!r} ends at {shown(t_last)} "
                            f"with a median step dt = {dt:g}"
                            + (f" {data.time_unit}" if data.time_origin is not None else ""))
