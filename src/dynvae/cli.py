"""The ``dynvae`` command line. Each sub-command lives in ``dynvae.commands.<name>``
and provides ``add_parser(subparsers)`` and ``run(args) -> int``; registering one
is one line in ``COMMANDS``."""

from __future__ import annotations

import argparse
import importlib
import sys

from dynvae.errors import CheckpointError, ConfigError, DataError

COMMANDS: list[str] = [
    "train",
    "evaluate",
    "impute",
    "forecast",
    "sample",
    "datasets",
    "gp",
    "data",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dynvae", description="Dynamical variational autoencoders: train, evaluate, impute, "
        "forecast and sample sequence models with missing values and irregular times.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"dynvae.commands.{name}").add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except (DataError, ConfigError, CheckpointError, FileNotFoundError, FileExistsError) as err:
        print(f"dynvae {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
