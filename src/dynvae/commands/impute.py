"""``dynvae impute RUN --data FILE --out CSV``: posterior mean and std of every entry,
also at times without a row (``--at``, ``--grid``) for continuous-time models."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from dynvae.commands import common, frame_outputs

if TYPE_CHECKING:
    import numpy as np


def add_parser(sub) -> None:
    p = sub.add_parser("impute", help="impute missing entries with a fitted model",
                       description="Write a CSV with one row per sequence, time and feature: "
                       "id, t, feature, observed (empty if missing), mean, std (and added: 1 "
                       "for a time added by --at/--grid), on the original scale (plus a "
                       "timestamp column after t when the times are dates). With a "
                       "continuous-time model and irregular times, rows are added on the "
                       "grid of the data's step inside the gaps unless --grid none. For image "
                       "frames, --frames FILE.npy also writes the imputed frames (N, T, C, H, "
                       "W): observed pixels kept, the posterior mean at missing ones, NaN "
                       "beyond a sequence's end; FILE.npz holds the arrays imputed, mean, "
                       "std, observed (NaN where missing), t (N, T) and lengths (N,).")
    common.add_prediction_args(p, plot_help="also plot the first sequence with +-2 std "
                               "bands")
    p.add_argument("--at", metavar="T1,T2", help="also impute at these times (numbers in "
                   "the data's time unit, or dates), in every sequence's span")
    p.add_argument("--grid", metavar="STEP", help="also impute on the grid t_0 + k STEP "
                   "inside the gaps (a number, a duration such as 5min for dated data, "
                   "'auto' for the data's grid step, or 'none')")
    p.add_argument("--frames", metavar="FILE", help="also write the imputed frames of image "
                   "data: .npy (N, T, C, H, W), or .npz with mean, std and more")
    common.add_force_arg(p, "existing --out, --plot and --frames files")
    p.set_defaults(run=run)


def requested_times(args: argparse.Namespace, data, model) -> list[np.ndarray] | None:
    """Per sequence, the times to add, or None when no row is added."""
    import sys

    import numpy as np

    from dynvae.commands import times as query
    from dynvae.data.timing import time_irregularity
    from dynvae.errors import ConfigError, DataError
    grid = args.grid
    irregular = time_irregularity(data)
    if grid is None and args.at is None and model.continuous_time and \
            irregular.absent_share > 0:
        grid = "auto"
        print(f"times have gaps ({irregular.describe()}): imputing on the grid of the "
              f"data's step inside them (--grid none turns this off)")
    if grid == "none":
        grid = None
    if grid is None and args.at is None:
        if irregular.irregular and not model.continuous_time:
            print(f"note: times are irregular ({irregular.describe()}); this model is "
                  "discrete-time and imputes only at the rows given")
        return None
    if not model.continuous_time:
        raise ConfigError("--at/--grid need a continuous-time model (e.g. lgssm with "
                          "time=continuous): a discrete-time model would treat the added "
                          "rows as steps")
    at = None if args.at is None else query.parse_times(args.at, data)
    step = None if grid is None else query.parse_step(grid, data)
    out = []
    inside = None if at is None else np.zeros(len(at), dtype=bool)
    for seq in data:
        new = [] if step is None else [query.grid_times(seq.t, step)]
        if at is not None:
            within = (at > seq.t[0]) & (at < seq.t[-1])
            inside |= within
            new.append(at[within])
        out.append(np.concatenate(new) if new else np.empty(0))
    if at is not None and not inside.all():
        given = [p.strip() for p in args.at.split(",") if p.strip()]   # as the user wrote
        outside = ",".join(g for g, ok in zip(given, inside, strict=True) if not ok)
        what = (f"--at {outside}: not strictly inside any sequence's span (first to last "
                f"time); imputation adds times between observations, `dynvae forecast --at` "
                f"predicts after the end")
        if not inside.any() and step is None:
            raise DataError(what)
        print(f"dynvae impute: warning: {what}; skipped", file=sys.stderr)
    return out


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from dynvae.commands import times as query
    from dynvae.commands.report import (
        bernoulli_model,
        imputation_frame,
        plot_first_imputation,
        predictions,
    )
    from dynvae.errors import ConfigError
    from dynvae.utils import atomic_write_text
    frame_outputs.check_frame_suffixes(args)
    if not (args.out or args.frames):
        raise ConfigError("give --out CSV or --frames FILE")
    loaded, data = common.load_run_and_data(args)
    if args.frames:
        frame_outputs.data_frame_shape(data, "--frames")
    new = requested_times(args, data, loaded.model)
    added = [np.zeros(len(s), dtype=bool) for s in data]
    if new is not None:
        data, added = query.with_rows_at(data, new)
    std = loaded.standardizer
    batch, x, seen, mean, sd = predictions(loaded.model, std.transform(data), std)
    if args.out:
        frame = imputation_frame(data, batch, x, mean, sd)
        if new is not None:
            frame["added"] = np.concatenate([np.tile(a, data.dim) for a in added]).astype(int)
        atomic_write_text(args.out, frame.to_csv(index=False))
    if args.frames:
        write_imputed_frames(args.frames, data, batch, x, mean, sd)
    if args.plot:
        plot_first_imputation(args.plot, data, x, seen, mean, sd,
                              spec=common.data_spec(args, fallback=loaded.config["data"]),
                              binary=bernoulli_model(loaded.model))
    n_added = sum(int(a.sum()) for a in added)
    missing = int((~seen[batch.valid.numpy()]).sum())
    extra = f", {n_added * data.dim} of them at {n_added} added times" if n_added else ""
    files = " and ".join(f for f in (args.out, args.frames) if f)
    print(f"wrote {files} ({missing} missing entries imputed{extra})")
    return 0


def write_imputed_frames(path: str, data, batch, x, mean, sd) -> None:
    """--frames: original-scale x (NaN where missing), mean, sd (B, T, D) as frames
    (B, T, C, H, W), NaN beyond each sequence's end."""
    import numpy as np
    valid = batch.valid.numpy()[..., None]                                  # (B, T, 1)
    pad = lambda v: np.where(valid, v, np.nan)
    imputed = pad(np.where(np.isnan(x), mean, x))
    shape = frame_outputs.data_frame_shape(data, "--frames")
    as_frames = lambda v: frame_outputs.as_frames(v, shape)
    frame_outputs.write_frame_arrays(
        path, as_frames(imputed), imputed=as_frames(imputed), mean=as_frames(pad(mean)),
        std=as_frames(pad(sd)), observed=as_frames(pad(x)),
        t=np.where(valid[..., 0], batch.t.numpy(), np.nan), lengths=batch.lengths.numpy())
