"""``dynvae evaluate RUN``: recompute the held-out metrics and rewrite RUN/metrics.json."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from dynvae.commands import common
from dynvae.errors import ConfigError, DataError


def add_parser(sub) -> None:
    p = sub.add_parser("evaluate", help="recompute a run's metrics.json",
                       description="Recompute the test metrics of a run (imputation of "
                       "entries hidden with a fixed seed, forecasts of held-out final steps, "
                       "log-likelihoods). Without --data: on the run's own test "
                       "sequences, rewriting RUN/metrics.json. With --data: on every "
                       "sequence of that file, written to --out (default "
                       "RUN/metrics-<file stem>.json); RUN/metrics.json stays the run's own.")
    p.add_argument("run_dir", metavar="RUN", help="run directory written by `dynvae train`")
    common.add_data_args(p, dataset=False)
    p.add_argument("--out", metavar="JSON", help="with --data: the metrics file to write "
                   "(default RUN/metrics-<data file stem>.json)")
    common.add_force_arg(p, "an existing --out file")
    common.add_device_arg(p)
    p.add_argument("--seed", type=int, help="seed of the hidden entries and of the Monte "
                   "Carlo terms (default: the run's own, so that repeats agree exactly)")
    p.set_defaults(run=run)


def evaluation_data(args: argparse.Namespace, config: dict):
    """--data (all its sequences) or the run's test sequences of its own data."""
    spec = common.data_spec(args, fallback=config["data"])
    ids = config["split"]["test_ids"]
    from dynvae.data.sharded import is_shard_dir
    if args.data is None and is_shard_dir(spec.get("data", "")):    # its test part only
        return common.open_shards(spec).with_ids(ids).to_memory()
    data = common.load_data(spec)
    if args.data is not None:
        return data
    index = {s.id: i for i, s in enumerate(data)}
    if any(i not in index for i in ids):
        raise DataError(f"the run's test sequences {ids} are not all in its data "
                        f"{spec}: pass --data")
    return data[[index[i] for i in ids]]


def run(args: argparse.Namespace) -> int:
    from dynvae.progress import progress_bar
    from dynvae.train import run as rundir
    from dynvae.train.evaluation import baseline_lines, evaluate_model
    from dynvae.train.lock import DirectoryLock
    common.apply_threads(args)
    out = metrics_file(args)
    loaded = rundir.load_run(args.run_dir, args.device)
    config = loaded.config
    data = evaluation_data(args, config)
    test = loaded.standardizer.transform(data)
    settings = rundir.eval_settings(config, str(Path(args.run_dir) / rundir.CONFIG))
    if args.seed is not None:
        settings = dataclasses.replace(settings, seed=args.seed)
    bar = progress_bar(3 * len(test), "evaluate", unit="seq")
    metrics = evaluate_model(loaded.model, test, loaded.standardizer, settings, bar=bar)
    bar.close()
    if out is not None:                    # other data: its own file, metrics.json kept
        trained_on = set(config["split"].get("train_ids") or []) & set(data.ids)
        saved = dict(metrics, n_test_sequences=float(len(test)),
                     n_training_sequences=float(len(trained_on)))
        rundir.write_metrics(Path(args.run_dir), saved, path=out)
        if trained_on:
            print(f"dynvae evaluate: warning: {len(trained_on)} of the {len(data)} sequences "
                  f"of {args.data} are training sequences of this run (by id; config.json's "
                  "train_ids): these metrics are not held-out scores "
                  "(n_training_sequences in the file)", file=sys.stderr)
    else:
        with DirectoryLock(args.run_dir):  # not while a training run writes RUN
            saved = rundir.read_metrics(args.run_dir)
            saved.update(metrics)
            saved["n_test_sequences"] = float(len(test))
            rundir.write_metrics(Path(args.run_dir), saved)
    for key in ("log_likelihood", "test_imputation_mse", "forecast_mse"):
        if key in saved:
            print(f"{key}: {saved[key]:.6g}")
    for line in baseline_lines(metrics):
        print(line)
    print(f"wrote {out if out is not None else Path(args.run_dir) / rundir.METRICS}")
    return 0


def metrics_file(args: argparse.Namespace) -> Path | None:
    """Where metrics on --data go (None: the run's own metrics.json), checked before any
    work: an existing file needs --force, and --out means nothing without --data."""
    if args.data is None:
        if args.out is not None:
            raise ConfigError("--out is for metrics on --data; without --data evaluate "
                              "rewrites RUN/metrics.json")
        return None
    stem = Path(args.data).name.split(".")[0] or "data"
    out = Path(args.out) if args.out is not None else Path(args.run_dir) / f"metrics-{stem}.json"
    common.check_new_files([("--out", str(out))], args.force, common.inputs_of(args))
    common.check_out_suffix("evaluate", out)
    return out
