"""``dynvae datasets``: list the built-in datasets and whether they can be loaded here;
``dynvae datasets export NAME FILE``: write one to a CSV or Parquet table."""

from __future__ import annotations

import argparse
import importlib.metadata as metadata
import re
from pathlib import Path

from dynvae.commands import common
from dynvae.data.datasets import DATASETS


def add_parser(sub) -> None:
    p = sub.add_parser("datasets", help="list the built-in datasets, or export one to a "
                       "CSV/Parquet file",
                       description="Without an action (or with `list`): list the built-in "
                       "datasets: name, description, the pip extra they need and whether its "
                       "packages are installed. `dynvae datasets export NAME FILE` writes a "
                       "dataset to a table that --data FILE reads back.")
    p.set_defaults(run=run)
    actions = p.add_subparsers(dest="action", metavar="ACTION", help="list (the default) "
                               "or export")
    actions.add_parser("list", help="list the built-in datasets (the default)",
                       description="List the built-in datasets.").set_defaults(run=run)
    export = actions.add_parser(
        "export", help="write a built-in dataset to a CSV or Parquet file",
        description="Write a built-in dataset in long format (one row per sequence and "
        "time, empty cells where values are missing) to FILE, and print the column options "
        "(--id-col, --time-col, --value-cols) that read it back with --data FILE. The time "
        "column is named after the dataset's time unit (e.g. year); an id column is written "
        "when there are several sequences. Datasets with a fixed train/valid/test split are "
        "written whole.")
    export.add_argument("name", metavar="NAME", help="built-in dataset name (see `dynvae "
                        "datasets`)")
    export.add_argument("file", metavar="FILE", help="file to write: .csv, .csv.gz, .parquet "
                        "or .pq, or .npz (arrays x, t, lengths, ...; image datasets as "
                        "frames (N, T, C, H, W))")
    export.add_argument("--dataset-option", action="append", default=[], metavar="KEY=VALUE",
                        help="an option of the dataset's loader, e.g. n_sequences=100 "
                        "(repeatable)")
    export.add_argument("--force", action="store_true", help="overwrite FILE if it exists")
    export.set_defaults(run=run_export)


def extra_requirements(extra: str) -> list[str] | None:
    """Distribution names of ``dynvae[extra]`` (None if they cannot be determined)."""
    try:
        lines = metadata.requires("dynvae") or []
        return [re.split(r"[ ;<>=!~\[]", r, maxsplit=1)[0] for r in lines
                if re.search(rf"extra\s*==\s*['\"]{re.escape(extra)}['\"]", r)]
    except metadata.PackageNotFoundError:
        pyproject = Path(__file__).resolve().parents[3] / "pyproject.toml"
        try:
            import tomllib
            table = tomllib.loads(pyproject.read_text())
        except (ImportError, OSError, ValueError):
            return None
        reqs = table.get("project", {}).get("optional-dependencies", {}).get(extra)
        return None if reqs is None else [re.split(r"[ ;<>=!~\[]", r, maxsplit=1)[0]
                                          for r in reqs]


def installed(extra: str | None) -> str:
    if extra is None:
        return "yes"
    names = extra_requirements(extra)
    if names is None:
        return "unknown"
    for name in names:
        try:
            metadata.version(name)
        except metadata.PackageNotFoundError:
            return "no"
    return "yes"


def run_export(args: argparse.Namespace) -> int:
    from dynvae.data.export import write_arrays, write_table
    spec = {"dataset": args.name}
    options = common.dataset_options(args.name, args.dataset_option)
    if options:
        spec["options"] = options
    data = common.load_data(spec)          # a dataset with named splits: all of it
    if Path(args.file).suffix.lower() == ".npz":
        write_arrays(data, args.file, overwrite=args.force)
        shape = "x" if data.frame_shape is None else f"frames {tuple(data.frame_shape)}"
        print(f"wrote {args.file} ({len(data)} sequence(s) of {shape}); read it back with: "
              f"--data {args.file}")
        return 0
    columns = write_table(data, args.file, overwrite=args.force)
    rows = sum(len(s) for s in data)
    print(f"wrote {args.file} ({len(data)} sequence(s), {rows} rows, {data.dim} value "
          f"column(s)); read it back with: --data {args.file} {columns.cli_options()}")
    return 0


def run(args: argparse.Namespace) -> int:
    rows = [(info.name, info.description, info.extra or "-", installed(info.extra))
            for info in DATASETS.values()]
    header = ("name", "description", "extra", "installed")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(4)]
    for row in [header, *rows]:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
    return 0
