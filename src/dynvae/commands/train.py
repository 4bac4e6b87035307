"""``dynvae train``: fit a model and write a run directory (see dynvae.train.run)."""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import time
from pathlib import Path

import torch

from dynvae import __version__
from dynvae.commands import common
from dynvae.commands.report import write_plots
from dynvae.data import SequenceDataset, Standardizer
from dynvae.errors import ConfigError
from dynvae.models.base import SelfFitting
from dynvae.models.registry import MODELS, model_class
from dynvae.train import run as rundir
from dynvae.train.evaluation import EvalSettings, evaluate_model, likelihood_metrics
from dynvae.utils import seed_everything

SPLIT = (0.8, 0.1, 0.1)


def add_parser(sub) -> None:
    p = sub.add_parser("train", help="fit a model and write a run directory",
                       description="Fit a model to a dataset and write RUN/config.json, "
                       "metrics.json, metrics.csv, checkpoints/model.pt and plots/*.png.")
    p.add_argument("--model", required=True, metavar="NAME",
                   help=f"model name, one of {sorted(MODELS)}")
    common.add_data_args(p, dataset=True, required=True)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="set a model or fit/train config field (repeatable)")
    p.add_argument("--out", required=True, metavar="RUN", help="run directory to write")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--force", action="store_true", help="overwrite a non-empty RUN")
    p.set_defaults(run=run)


def fit_sections(cls) -> dict[str, type]:
    """Config sections of a model: its Config, and its FitConfig (self-fitting models)
    or the gradient trainer's TrainConfig (imported only when needed)."""
    if issubclass(cls, SelfFitting):
        return {"model": cls.Config, "fit": cls.FitConfig}
    try:
        trainer = importlib.import_module("dynvae.train.trainer")
    except ImportError as err:
        raise ConfigError(f"this model is trained by dynvae.train.trainer, which is not "
                          f"available: {err}") from None
    return {"model": cls.Config, "train": trainer.TrainConfig}


def split_dataset(data: SequenceDataset, seed: int):
    """(train, val, test, shared): by sequence when there are several; a single
    sequence is used for training and testing alike (shared = True)."""
    if len(data) >= len(SPLIT):
        train, val, test = data.split(SPLIT, seed=seed)
        return train, val, test, False
    if len(data) == 2:
        train, test = data.split((0.5, 0.5), seed=seed)
        return train, None, test, False
    return data, None, data, True


def fit_model(model, name: str, configs: dict, train, val, out: Path, device: str) -> list:
    """SelfFitting models fit themselves; the others go to the gradient Trainer."""
    if isinstance(model, SelfFitting):
        batch = lambda d: None if d is None else d.to_batch(dtype=torch.float64, device=device)
        return model.fit(batch(train), batch(val), configs["fit"], out)
    trainer = importlib.import_module("dynvae.train.trainer")
    result = trainer.Trainer(model, configs["train"], out).fit(train, val)
    return list(result.history)


def run(args: argparse.Namespace) -> int:
    cls = model_class(args.model)
    configs = common.resolve_configs(args.set, fit_sections(cls))
    if "train" in configs:      # --device and --seed apply to the gradient trainer too
        configs["train"] = dataclasses.replace(configs["train"], device=args.device,
                                               seed=args.seed)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda was given but no CUDA device is available")
    out = rundir.prepare_run_dir(args.out, args.force)
    seed_everything(args.seed)
    spec = common.data_spec(args)
    data = common.load_data(spec)
    train, val, test, shared = split_dataset(data, args.seed)
    standardizer = Standardizer().fit(train)
    train, test = standardizer.transform(train), standardizer.transform(test)
    val = None if val is None else standardizer.transform(val)
    model = cls.from_config(configs["model"], data.dim, data.input_dim).to(args.device)
    start = time.perf_counter()
    history = fit_model(model, args.model, configs, train, val, out, args.device)
    seconds = time.perf_counter() - start
    model.eval()
    rundir.save_model(out, args.model, model, dataclasses.asdict(configs["model"]), data.dim,
                      data.input_dim, standardizer)
    settings = EvalSettings(seed=args.seed)
    metrics = evaluate_model(model, test, standardizer, settings)
    metrics.update(likelihood_metrics(model, train, standardizer, settings.iwae_samples,
                                      prefix="train_"))
    metrics.update({"fit_seconds": seconds, "n_train_sequences": float(len(train)),
                    "n_test_sequences": float(len(test)),
                    "train_equals_test": float(shared)})
    rundir.write_config(out, {
        "model": args.model, "dynvae_version": __version__,
        "config": {section: dataclasses.asdict(c) for section, c in configs.items()},
        "data": spec, "standardizer": standardizer.state_dict(), "seed": args.seed,
        "device": args.device, "split": {"fractions": list(SPLIT) if not shared else None,
                                         "train_equals_test": shared,
                                         "train_ids": train.ids, "test_ids": test.ids},
        "evaluation": dataclasses.asdict(settings),
    })
    rundir.write_metrics(out, metrics)
    rundir.write_history(out, history)
    write_plots(out, model, test, standardizer, history, settings)
    note = " (train and test are the same single sequence)" if shared else ""
    print(f"log-likelihood: {metrics['train_log_likelihood']:.4f} "
          f"(per step {metrics['train_log_likelihood_per_step']:.4f}){note}")
    print(f"wrote {out}")
    return 0
