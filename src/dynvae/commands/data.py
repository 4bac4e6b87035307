"""``dynvae data shard``: turn a CSV or Parquet table of any size into sharded Parquet
that ``dynvae train --data DIR`` streams (see dynvae.data.sharded for the layout)."""

from __future__ import annotations

import argparse

from dynvae.commands.common import split_cols
from dynvae.errors import ConfigError


def add_parser(sub) -> None:
    p = sub.add_parser("data", help="prepare data files (shard a large table)",
                       description="Prepare data files for training.")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION",
                               help="what to do (shard: write sharded Parquet)")
    s = actions.add_parser(
        "shard", help="write a table as sharded Parquet in bounded memory",
        description="Read INPUT (CSV, also compressed, or Parquet; long format) batch by "
        "batch and write OUT_DIR: Parquet shards each holding whole sequences, index.json "
        "(columns, shard files), sequences.parquet (per sequence: id, length, shard, "
        "moments) and stats.json (standardisation statistics). "
        "Memory is bounded by one batch and the largest shard, not by the table.")
    s.add_argument("input", metavar="INPUT", help="CSV or Parquet file")
    s.add_argument("out_dir", metavar="OUT_DIR", help="shard directory to write")
    s.add_argument("--id-col", metavar="C", help="column naming the sequence of a row")
    s.add_argument("--time-col", metavar="C", help="column of times (numbers or ISO dates)")
    s.add_argument("--value-cols", metavar="A,B", help="comma-separated value columns "
                   "(default: every other numeric column)")
    s.add_argument("--input-cols", metavar="A,B", help="comma-separated input columns u")
    s.add_argument("--shards", type=int, metavar="N", help="number of shards (default: one "
                   "per --shard-mb of input)")
    s.add_argument("--shard-mb", type=float, default=64.0, metavar="MB",
                   help="input megabytes per shard when --shards is not given (default 64)")
    s.add_argument("--batch-rows", type=int, default=65_536, metavar="N",
                   help="rows read at a time (default 65536)")
    s.add_argument("--force", action="store_true", help="replace an existing shard directory")
    s.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from dynvae.data.shard_writer import write_shards
    if args.shards is not None and args.shards < 1:
        raise ConfigError(f"--shards must be >= 1, got {args.shards}")
    if args.shard_mb <= 0 or args.batch_rows < 1:
        raise ConfigError("--shard-mb must be > 0 and --batch-rows >= 1")
    summary = write_shards(args.input, args.out_dir, id_col=args.id_col,
                           time_col=args.time_col, value_cols=split_cols(args.value_cols),
                           input_cols=split_cols(args.input_cols), shards=args.shards,
                           shard_mb=args.shard_mb, batch_rows=args.batch_rows,
                           force=args.force)
    print(f"wrote {summary.path}: {summary.rows} rows, {summary.sequences} sequences in "
          f"{summary.shards} shards ({summary.seconds:.1f} s)")
    return 0
