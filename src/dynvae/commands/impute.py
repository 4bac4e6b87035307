"""``dynvae impute RUN --data FILE --out CSV``: posterior mean and std of every entry."""

from __future__ import annotations

import argparse

from dynvae.commands import common


def add_parser(sub) -> None:
    p = sub.add_parser("impute", help="impute missing entries with a fitted model",
                       description="Write a CSV with one row per sequence, time and feature: "
                       "id, t, feature, observed (empty if missing), mean, std, on the "
                       "original scale (plus a timestamp column after t when the times are "
                       "dates).")
    common.add_prediction_args(p, plot_help="also plot the first sequence with +-2 std "
                               "bands")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from dynvae.commands.report import (
        bernoulli_model,
        imputation_frame,
        plot_first_imputation,
        predictions,
    )
    from dynvae.utils import atomic_write_text
    loaded, data = common.load_run_and_data(args)
    std = loaded.standardizer
    scaled = std.transform(data)
    batch, x, seen, mean, sd = predictions(loaded.model, scaled, std)
    frame = imputation_frame(data, batch, x, mean, sd)
    atomic_write_text(args.out, frame.to_csv(index=False))
    if args.plot:
        plot_first_imputation(args.plot, data, x, seen, mean, sd,
                              spec=common.data_spec(args, fallback=loaded.config["data"]),
                              binary=bernoulli_model(loaded.model))
    print(f"wrote {args.out} ({int((~seen[batch.valid.numpy()]).sum())} missing entries "
          f"imputed)")
    return 0
