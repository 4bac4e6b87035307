"""Pieces shared by the sub-commands: data options, output files and ``--force``,
``--set key=value`` resolution."""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import os
import sys
import typing
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dynvae.data.datasets import DATASETS
from dynvae.errors import ConfigError

if TYPE_CHECKING:
    from dynvae.data import SequenceDataset

DEFAULT_THREADS = 1   # torch intra-op threads of a command unless told (apply_threads)


class ColumnList(argparse.Action):
    """``--value-cols A,B``: a comma-separated list of column names (given twice, the
    lists are joined)."""

    def __call__(self, parser, namespace, values, option_string=None):
        columns = [c.strip() for c in values.split(",") if c.strip()]
        setattr(namespace, self.dest, [*(getattr(namespace, self.dest) or []), *columns])


class DeprecatedColumn(ColumnList):
    """The older ``--value-col A`` (one column, repeated): still read, with a notice."""

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"{parser.prog}: {option_string} is deprecated; write --value-cols A,B",
              file=sys.stderr)
        super().__call__(parser, namespace, values, option_string)


def add_data_args(parser: argparse.ArgumentParser, dataset: bool = True,
                  required: bool = False) -> None:
    """--data FILE and its column options (and --dataset NAME when ``dataset``)."""
    group = parser.add_mutually_exclusive_group(required=required)
    if not dataset:           # the commands that read a run: data_spec's fallback
        parser.epilog = ("Column options that are not given are taken from the run's "
                         "config.json (when it was trained with --data).")
    if dataset:
        group.add_argument("--dataset", metavar="NAME", help="a built-in dataset "
                           "(see `dynvae datasets`)")
        parser.add_argument("--dataset-option", action="append", default=[],
                            metavar="KEY=VALUE", help="an option of the built-in dataset's "
                            "loader, e.g. max_pieces=20 (repeatable)")
    group.add_argument("--data", metavar="FILE", help="CSV, Parquet or NumPy file (long "
                       "format: one row per sequence id and time; empty cells are missing), "
                       "or a directory written by `dynvae data shard` (train streams it; "
                       "the other commands read it into memory)")
    parser.add_argument("--id-col", metavar="C", help="column naming the sequence of a row")
    parser.add_argument("--time-col", metavar="C", help="column of times (numbers or dates)")
    parser.add_argument("--date-format", metavar="FMT", help="format of the dates in the "
                        "time column, e.g. %%d/%%m/%%Y (needed when dates read two ways, such "
                        "as 01/03/2021)")
    parser.add_argument("--value-cols", metavar="A,B", help="comma-separated value columns "
                        "(default: every other numeric column)")
    parser.add_argument("--input-cols", metavar="A,B", help="comma-separated input columns u")


def add_prediction_args(parser: argparse.ArgumentParser, plot_help: str) -> None:
    """The arguments of the commands that predict from a fitted run (impute, forecast):
    RUN, --data FILE and its column options, --out CSV, --plot PNG, --device. --out may
    be left out when the command writes frames instead (``--frames``)."""
    parser.add_argument("run_dir", metavar="RUN", help="run directory written by "
                        "`dynvae train`")
    add_data_args(parser, dataset=False, required=True)
    parser.add_argument("--out", metavar="CSV", help="CSV file to write (needed unless "
                        "--frames is given)")
    parser.add_argument("--plot", metavar="PNG", help=plot_help)
    parser.add_argument("--seed", type=int, default=0, help="random seed of the model's "
                        "Monte Carlo draws (default 0: the same command writes the same "
                        "numbers)")
    add_device_arg(parser)


def add_device_arg(parser: argparse.ArgumentParser) -> None:
    """--device cpu|cuda and --threads N."""
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"],
                        help="where the model runs: cpu (default) or cuda (a GPU)")
    parser.add_argument("--threads", type=thread_count, metavar="N",
                        help="CPU threads of the tensor operations (default: OMP_NUM_THREADS "
                        "when it is set, else 1, so that runs side by side do not stall "
                        "each other; see docs/cli.md)")


def thread_count(text: str) -> int:
    """argparse type of --threads: an integer >= 1."""
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}")
    return n


def apply_threads(args: argparse.Namespace) -> int:
    """Set torch's intra-op threads for this command and return their number: --threads
    when given, else torch's own choice when OMP_NUM_THREADS is set (torchrun sets it
    to 1 per process), else DEFAULT_THREADS. The models' operations are small: on two
    cores one run with two threads made 0-38 % more training steps than with one, but
    two runs side by side with two threads each made 8.5x fewer steps than with one
    (the threads of each run wait for each other's descheduled ones; docs/cli.md)."""
    import torch
    n = getattr(args, "threads", None)
    if n is None and not os.environ.get("OMP_NUM_THREADS"):
        n = DEFAULT_THREADS
    if n is not None:
        torch.set_num_threads(n)
    return torch.get_num_threads()


OUTPUT_FLAGS = ("out", "plot", "frames", "gif", "strip")


def add_force_arg(parser: argparse.ArgumentParser, outputs: str) -> None:
    """--force: the one switch that lets a command replace its existing output files
    (``outputs``, e.g. "existing --out and --plot files")."""
    parser.add_argument("--force", action="store_true", help=f"replace {outputs} "
                        "(without --force an existing file stops the command before "
                        "anything is written)")


def check_new_files(files: list[tuple[str, str]], force: bool,
                    protected: dict[Path, str] | None = None) -> None:
    """ConfigError, before any work is done, for a file of ``files`` ((flag, path) pairs;
    flag may be empty) that exists while ``force`` is False, that two flags name, that is
    one of the ``protected`` files (resolved path -> what it is; not even with --force),
    or that cannot be written: so a command writes all of its outputs or none of them."""
    from dynvae.train import run as rundir
    named = lambda flag, path: f"{flag} {path}" if flag else str(path)
    seen: dict[Path, str] = {}
    for flag, path in files:
        key = Path(path).resolve()
        if protected and key in protected:
            raise ConfigError(f"{named(flag, path)} is {protected[key]}; name another file")
        if key in seen:
            raise ConfigError(f"{seen[key]} and {flag} name the same file {path}")
        seen[key] = flag
        if Path(path).exists() and not Path(path).is_dir() and not force:
            raise ConfigError(f"{named(flag, path)} exists; pass --force to replace it")
        rundir.check_writable(path, flag or "file")


# the files each command writes as --out: any other name would get CSV text (or JSON)
# under a suffix that promises another format (.parquet, .npz, .txt)
OUT_SUFFIXES = {"impute": (".csv",), "forecast": (".csv",), "sample": (".npy", ".csv"),
                "evaluate": (".json",)}


def check_out_suffix(command: str, out) -> None:
    """ConfigError unless the file name ``out`` ends in what ``command`` writes."""
    allowed = OUT_SUFFIXES.get(command)
    if out and allowed and Path(out).suffix.lower() not in allowed:
        raise ConfigError(f"--out {out}: `dynvae {command}` writes "
                          f"{' or '.join(a[1:] for a in allowed)} files; give a file name "
                          f"ending in {' or '.join(allowed)}")


def check_outputs(args: argparse.Namespace) -> None:
    """check_new_files for every output flag given (--out, --plot, --frames, --gif,
    --strip), with ``args.force``; never the input data or a file of the run; and --out's
    suffix, which must name the format the command writes (``OUT_SUFFIXES``)."""
    files = [(f"--{flag}", getattr(args, flag)) for flag in OUTPUT_FLAGS
             if getattr(args, flag, None)]
    check_new_files(files, getattr(args, "force", False), inputs_of(args))
    check_out_suffix(getattr(args, "command", ""), getattr(args, "out", None))


def inputs_of(args: argparse.Namespace) -> dict[Path, str]:
    """The files a command reads and must not overwrite: its --data file and the run's
    own files (config.json, metrics, checkpoints, plots), resolved path -> description."""
    from dynvae.train import run as rundir
    inputs: dict[Path, str] = {}
    data = getattr(args, "data", None)
    if data is not None and Path(data).is_file():
        inputs[Path(data).resolve()] = "the --data input"
    run = getattr(args, "run_dir", None)
    if run is not None and Path(run).is_dir():
        for pattern in rundir.TRAIN_ARTEFACTS:
            for item in Path(run).glob(pattern):
                inputs[item.resolve()] = f"a file of the run {run} ({item.name})"
    return inputs


def load_run_and_data(args: argparse.Namespace):
    """The run of ``args.run_dir`` (a dynvae.train.run.LoadedRun) and the data named by
    ``args``, read with the run's saved column options where none are given; the output
    files are checked first, and the random generators are seeded from ``--seed``."""
    from dynvae.train import run as rundir
    from dynvae.utils import seed_everything
    check_outputs(args)
    apply_threads(args)
    loaded = rundir.load_run(args.run_dir, args.device)
    data = load_data(data_spec(args, fallback=loaded.config["data"]))
    seed_everything(getattr(args, "seed", 0))
    return loaded, data


def split_cols(text: str | None) -> list[str] | None:
    return None if text is None else [c.strip() for c in text.split(",") if c.strip()]


def data_spec(args: argparse.Namespace, fallback: dict | None = None) -> dict:
    """The data source named on the command line, or ``fallback`` (a run's saved spec)
    when none is; column options given on the command line override the saved ones."""
    if getattr(args, "dataset", None):
        options = dataset_options(args.dataset, getattr(args, "dataset_option", []))
        return {"dataset": args.dataset, **({"options": options} if options else {})}
    if args.data is None:
        if fallback is None:
            raise ConfigError("give --dataset NAME or --data FILE")
        return dict(fallback)
    saved = fallback if fallback and "data" in fallback else {}
    spec = {"data": str(args.data)}
    given = (("id_col", args.id_col), ("time_col", args.time_col),
             ("value_cols", split_cols(args.value_cols)),
             ("input_cols", split_cols(args.input_cols)), ("date_format", args.date_format))
    for key, value in given:
        spec[key] = value if value is not None else saved.get(key)
    if fallback and "dataset" in fallback and any(v is None for _, v in given[:4]):
        spec.update(exported_columns(fallback, spec))
    return spec


def exported_columns(dataset_spec: dict, spec: dict) -> dict:
    """For a run trained on a built-in dataset and given ``--data FILE``: the column
    options not given, from the columns ``dynvae datasets export`` writes for that
    dataset, each where FILE's header has it (the value and input columns all of them);
    said on standard error. {} for a file that is not a table."""
    from dynvae.data.export import table_columns
    header = _header(spec["data"])
    if header is None:
        return {}
    columns = table_columns(load_data(dataset_spec))
    found = {"id_col": columns.id_col, "time_col": columns.time_col,
             "value_cols": columns.value_cols, "input_cols": columns.input_cols or None}
    filled = {}
    for key, value in found.items():
        if spec.get(key) is not None or value is None:
            continue
        names = value if isinstance(value, list) else [value]
        if all(name in header for name in names):
            filled[key] = value
    if filled:
        flags = " ".join(f"--{k.replace('_', '-')} "
                         f"{','.join(v) if isinstance(v, list) else v}"
                         for k, v in filled.items())
        print(f"reading {spec['data']} with the columns of the export of dataset "
              f"{dataset_spec['dataset']!r}: {flags}", file=sys.stderr)
    return filled


def _header(path: str) -> list[str] | None:
    """Column names of a CSV or Parquet table, or None for other files."""
    import pandas as pd
    name = Path(path).name.lower()
    try:
        if name.endswith((".parquet", ".pq")):
            import pyarrow.parquet as pq
            return list(pq.read_schema(path).names)
        if ".csv" in name:
            return [str(c) for c in pd.read_csv(path, nrows=0).columns]
    except (OSError, ValueError, pd.errors.ParserError, pd.errors.EmptyDataError,
            UnicodeDecodeError):
        return None                         # the reader proper reports the problem
    return None


def dataset_options(name: str, items: list[str]) -> dict[str, Any]:
    """Parse ``key=value`` options of the loader of built-in dataset ``name``."""
    if name not in DATASETS:
        raise ConfigError(f"unknown dataset {name!r}; choose one of {sorted(DATASETS)}")
    loader = DATASETS[name].loader
    hints = typing.get_type_hints(loader)
    options: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or key not in hints or key in ("return", "split"):
            valid = [k for k in hints if k not in ("return", "split")]
            if not valid:
                raise ConfigError(f"--dataset-option {item!r}: dataset {name!r} takes no "
                                  "options")
            raise ConfigError(f"--dataset-option {item!r}: dataset {name!r} takes KEY=VALUE "
                              f"with KEY one of {valid}")
        options[key] = _parse_value(text.strip(), hints[key], key)
    return options


def has_named_splits(spec: dict) -> bool:
    """True for built-in datasets with a fixed train/valid/test split (a ``split`` option)."""
    return ("dataset" in spec and spec["dataset"] in DATASETS
            and "split" in inspect.signature(DATASETS[spec["dataset"]].loader).parameters)


def load_data(spec: dict, split: str = "all") -> SequenceDataset:
    """The data of ``spec``; for a dataset with named splits, the ``split`` part."""
    from dynvae.data import load_dataset, read_table
    if "dataset" in spec:
        options = dict(spec.get("options", {}))
        if has_named_splits(spec):
            options["split"] = split
        loader = DATASETS[spec["dataset"]].loader if spec["dataset"] in DATASETS else None
        if loader is not None and "progress" in inspect.signature(loader).parameters:
            options.setdefault("progress", True)     # bars in the CLI, off in the API
        return load_dataset(spec["dataset"], **options)
    from dynvae.data.sharded import is_shard_dir
    if is_shard_dir(spec["data"]):          # written by `dynvae data shard`
        return open_shards(spec).to_memory()
    return read_table(spec["data"], id_col=spec.get("id_col"), time_col=spec.get("time_col"),
                      value_cols=spec.get("value_cols"), input_cols=spec.get("input_cols"),
                      date_format=spec.get("date_format"))


def open_shards(spec: dict):
    """The ShardedDataset of ``spec``; its columns were fixed when it was written."""
    from dynvae.data.sharded import ShardedDataset
    given = [k for k in ("id_col", "time_col", "value_cols", "input_cols", "date_format")
             if spec.get(k) is not None]
    if given:
        raise ConfigError(f"{spec['data']} is a shard directory: its columns were chosen by "
                          f"`dynvae data shard`; leave out {given}")
    return ShardedDataset(spec["data"])


def _parse_value(text: str, kind: Any, key: str) -> Any:
    """Parse ``text`` as the annotated type ``kind`` (bool, int, float, str, X | None)."""
    args = typing.get_args(kind)
    if type(None) in args:
        if text.lower() in ("none", "null"):
            return None
        kind = next(a for a in args if a is not type(None))
    if kind is bool:
        table = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
        if text.lower() not in table:
            raise ConfigError(f"--set {key}={text}: expected true or false")
        return table[text.lower()]
    if typing.get_origin(kind) is tuple and typing.get_args(kind)[-1] is Ellipsis:
        item = typing.get_args(kind)[0]
        parts = [p for p in text.replace(" ", "").strip("()[]").split(",") if p]
        return tuple(_parse_value(p, item, key) for p in parts)
    if kind in (int, float, str):
        try:
            return kind(text)
        except ValueError:
            raise ConfigError(f"--set {key}={text}: expected {kind.__name__}") from None
    raise ConfigError(f"--set {key}: values of type {kind} cannot be set from the command line")


def _did_you_mean(key: str, valid: list[str]) -> str:
    """" (did you mean 'train.max_seconds'?)" for a near miss of a key or of a key's
    field name, else ""."""
    import difflib
    by_name = {v.rpartition(".")[2]: v for v in valid}
    near = difflib.get_close_matches(key, valid, n=1, cutoff=0.75) or [
        by_name[m] for m in difflib.get_close_matches(key.rpartition(".")[2], list(by_name),
                                                      n=1, cutoff=0.75)]
    return f" (did you mean {near[0]!r}?)" if near else ""


def resolve_configs(sets: list[str], sections: dict[str, type]) -> dict[str, Any]:
    """Build one dataclass instance per section from ``key=value`` strings.

    A key is a field name (``state_dim``) or ``section.field`` (``model.state_dim``).
    Unknown or ambiguous keys raise :class:`ConfigError` listing the valid keys.
    """
    hints = {name: typing.get_type_hints(cls) for name, cls in sections.items()}
    fields = {name: [f.name for f in dataclasses.fields(cls)] for name, cls in sections.items()}
    values: dict[str, dict[str, Any]] = {name: {} for name in sections}
    valid = sorted(f"{s}.{f}" for s, names in fields.items() for f in names)
    for item in sets:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        key, text = item.split("=", 1)
        key = key.strip()
        section, _, name = key.rpartition(".")
        owners = [section] if section else [s for s, names in fields.items() if name in names]
        if not owners or owners[0] not in fields or name not in fields[owners[0]]:
            near = _did_you_mean(key, valid)
            raise ConfigError(f"unknown config key {key!r}{near}; " + (
                "--list-keys lists every key with its meaning" if near
                else f"valid keys: {', '.join(valid)}"))
        if len(owners) > 1:
            raise ConfigError(f"config key {key!r} is ambiguous; write one of "
                              f"{[f'{s}.{name}' for s in owners]}")
        values[owners[0]][name] = _parse_value(text.strip(), hints[owners[0]][name], key)
    return {name: cls(**values[name]) for name, cls in sections.items()}
