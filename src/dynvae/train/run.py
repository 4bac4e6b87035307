"""The run directory written by ``dynvae train --out RUN`` (docs/cli.md,
"Run directory and metrics.json").

    RUN/config.json            resolved configuration, data spec, standardizer state
    RUN/metrics.json           final metrics, flat name: number pairs (see README)
    RUN/metrics.csv            training curve, one row per step
    RUN/checkpoints/model.pt   model weights and everything needed to rebuild it
    RUN/plots/*.png            training curve, imputation, forecast

Every file is written atomically.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from dynvae.data import Standardizer
from dynvae.errors import CheckpointError, ConfigError
from dynvae.models.base import DVAE
from dynvae.models.registry import model_class
from dynvae.train import schema
from dynvae.train.checkpoint import load_checkpoint, require_keys, save_checkpoint
from dynvae.train.evaluation import EvalSettings, evaluation_dtype
from dynvae.train.lock import LOCK_NAME, DirectoryLock
from dynvae.utils import atomic_write_json, atomic_write_text

CONFIG, METRICS, CURVE, MODEL = "config.json", "metrics.json", "metrics.csv", "checkpoints/model.pt"

TRAIN_ARTEFACTS = (CONFIG, METRICS, CURVE, "checkpoints/*.pt", "plots/*.png", ".*.tmp",
                   "checkpoints/.*.tmp", "plots/.*.tmp")
SUBDIRS = ("checkpoints", "plots")
# training options a resumed run may change; every other option must be the saved one
RESUMABLE = frozenset({"max_steps", "max_epochs", "max_seconds", "patience", "progress",
                       "num_workers", "eval_batch_size", "checkpoint_every", "device"})


def check_writable(target: str | os.PathLike, what: str, directory: bool = False) -> None:
    """Raise ConfigError unless the file (or ``directory``) ``target`` can be written: the
    nearest existing folder on its path must be a directory this process can create
    files in (tried with a probe that is removed at once)."""
    target = Path(target)
    if not directory and target.is_dir():
        raise ConfigError(f"cannot write {what} {target}: it is a directory")
    folder = target if directory else target.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise ConfigError(f"cannot write {what} {target}: {folder} is not a directory")
    try:
        Path(tempfile.mkdtemp(prefix=".dynvae-probe-", dir=folder)).rmdir()
    except OSError as err:
        raise ConfigError(f"cannot write {what} {target}: {folder} is not writable "
                          f"({err.strerror or err})") from None


def run_contents(path: Path) -> list[Path]:
    """What a run directory holds besides its lock file and the empty ``checkpoints/``
    and ``plots/`` folders a run creates first."""
    return [p for p in path.iterdir() if p.name != LOCK_NAME and not (
        p.name in SUBDIRS and p.is_dir() and not any(p.iterdir()))]


def check_run_dir(path: str | os.PathLike, force: bool) -> Path:
    """Refuse ``path`` if it is a file, cannot be written, or is an existing non-empty
    directory unless ``force``."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise FileExistsError(f"{path} exists and is not a directory")
    if path.is_dir() and run_contents(path) and not force:
        raise FileExistsError(f"run directory {path} exists and is not empty; pass --force "
                              "to overwrite it")
    check_writable(path, "the run directory", directory=True)
    return path


def remove_artefacts(path: Path, artefacts=TRAIN_ARTEFACTS) -> None:
    """Remove the files a run writes (``artefacts``: glob patterns relative to ``path``),
    then its empty sub-folders; any other file is left alone."""
    for pattern in artefacts:
        for item in path.glob(pattern):
            if item.is_file() or item.is_symlink():
                item.unlink()
    for name in SUBDIRS:
        if (path / name).is_dir() and not any((path / name).iterdir()):
            (path / name).rmdir()


@contextmanager
def open_run_dir(path: str | os.PathLike, force: bool = False, resume: bool = False,
                 artefacts=TRAIN_ARTEFACTS, folders=SUBDIRS) -> Iterator[Path]:
    """Hold the run directory ``path`` while a run writes it.

    Creates and locks it (FileExistsError when another process holds it), checks again
    under the lock that it is empty unless ``force`` or ``resume``, and with ``force``
    first removes the previous run's own files (``artefacts``), never other files. When
    the body fails, a new run that wrote no checkpoint to resume from leaves nothing
    behind: its files go, and the folders this call created go too. ``folders``: the
    sub-folders to create.
    """
    path = Path(path)
    created = _missing_folders(path)
    path.mkdir(parents=True, exist_ok=True)
    lock = DirectoryLock(path).acquire()
    try:
        check_run_dir(path, force or resume)
        if force and not resume:
            remove_artefacts(path, artefacts)
        for name in folders:
            (path / name).mkdir(exist_ok=True)
    except BaseException:
        lock.release()
        raise
    try:
        yield path
    except BaseException:
        if not resume and not (path / "checkpoints" / "last.pt").is_file():
            remove_artefacts(path, artefacts)
            lock.release()
            for folder in created:                 # deepest first; only if empty
                if folder.is_dir() and not any(folder.iterdir()):
                    folder.rmdir()
        raise
    finally:
        lock.release()


def _missing_folders(path: Path) -> list[Path]:
    """The folders on ``path`` that do not exist yet, deepest first."""
    missing = []
    while not path.exists() and path != path.parent:
        missing.append(path)
        path = path.parent
    return missing


def config_differences(saved: dict[str, Any], requested: dict[str, Any]) -> list[str]:
    """Dotted keys whose values differ between two nested configurations (compared as
    JSON values, so tuples equal lists)."""
    flat_a, flat_b = _flatten(json.loads(json.dumps(saved, default=float))), \
        _flatten(json.loads(json.dumps(requested, default=float)))
    return sorted(k for k in set(flat_a) | set(flat_b) if flat_a.get(k, _ABSENT) !=
                  flat_b.get(k, _ABSENT))


_ABSENT = object()


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict) and value:
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(_flatten(item, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: value}


def write_config(run: Path, config: dict[str, Any]) -> None:
    atomic_write_json(run / CONFIG, config)


def read_config(run: str | os.PathLike) -> dict[str, Any]:
    """RUN/config.json, every value that dynvae reads from it checked (ConfigError naming
    the file and key otherwise)."""
    path = Path(run) / CONFIG
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: is {run} a dynvae run directory?")
    try:
        config = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path} is not valid JSON: {err}") from None
    if isinstance(config, dict) and "model" not in config and "kernel_fitted" in config:
        raise ConfigError(f"{run} was written by `dynvae gp` (a fitted GP, not a trained "
                          f"model): its predictions are {Path(run) / 'predictions.csv'}; "
                          "impute, forecast, sample and evaluate read runs of `dynvae train`")
    return check_run_config(config, str(path))


def check_run_config(config: Any, where: str) -> dict[str, Any]:
    """The run configuration ``config`` (as written by ``dynvae train``) with the types
    of the entries that commands read checked: model, data, split, seed, evaluation."""
    config = schema.mapping_of(config, where)
    schema.field(config, "model", str, where)
    schema.check_data_spec(schema.field(config, "data", dict, where), f"{where}: 'data'")
    split = schema.field(config, "split", dict, where)
    for key in ("train_ids", "test_ids"):
        if key == "train_ids" and split.get(key, []) is None:     # streamed shards
            continue
        ids = schema.field(split, key, list, f"{where}: 'split'")
        if not all(isinstance(i, str) for i in ids):
            schema.fail(ConfigError, f"{where}: 'split'", f"{key!r} must be a list of "
                        "sequence ids (strings)")
    schema.field(config, "seed", int, where)
    eval_settings(config, where)
    return config


def eval_settings(config: dict[str, Any], where: str = CONFIG) -> EvalSettings:
    """The EvalSettings saved in a run's config (defaults when it has none)."""
    if "evaluation" not in config:
        return EvalSettings()
    return schema.dataclass_from(EvalSettings, config["evaluation"], f"{where}: 'evaluation'")


def write_metrics(run: Path, metrics: dict[str, float], path: Path | None = None) -> None:
    """metrics.json (or ``path``): flat name -> finite number pairs (non-finite values
    become null)."""
    clean = {k: (float(v) if math.isfinite(float(v)) else None) for k, v in metrics.items()}
    atomic_write_json(run / METRICS if path is None else path, clean)


def read_metrics(run: str | os.PathLike) -> dict[str, float]:
    """RUN/metrics.json ({} when there is none yet)."""
    path = Path(run) / METRICS
    if not path.is_file():
        return {}
    try:
        return schema.mapping_of(json.loads(path.read_text()), str(path))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path} is not valid JSON: {err}") from None


def write_history(run: Path, history: list[dict]) -> None:
    """metrics.csv: one row per training step; columns are the union of the rows' keys."""
    columns: list[str] = []
    for row in history:
        columns += [k for k in row if k not in columns]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(history)
    atomic_write_text(run / CURVE, buf.getvalue())


@dataclass
class LoadedRun:
    """A fitted model with the configuration and standardizer of its run."""

    model: DVAE
    config: dict[str, Any]
    standardizer: Standardizer


def save_model(run: Path, name: str, model: DVAE, model_config: dict, data_dim: int,
               input_dim: int, standardizer: Standardizer) -> None:
    save_checkpoint(run / MODEL, {
        "model": name, "model_config": model_config, "data_dim": data_dim,
        "input_dim": input_dim, "state_dict": model.state_dict(),
        "standardizer": standardizer.state_dict(),
    })


def load_run(run: str | os.PathLike, device: str = "cpu") -> LoadedRun:
    """Rebuild the model of a run from its checkpoint, read as data: every entry is
    checked, and the sizes it declares against its weights' shapes before the model is
    built (CheckpointError naming the file and the entry otherwise). The model comes
    back in eval mode and in the precision runs are evaluated in
    (:func:`dynvae.train.evaluation.evaluation_dtype`: float64, float32 for conv frames)."""
    config = read_config(run)
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        # else torch's refusal to map the weights there reads as a corrupt checkpoint
        raise ConfigError(f"--device {device} was given but no CUDA device is available")
    path = Path(run) / MODEL
    where = f"checkpoint {path}"
    payload = load_checkpoint(path, map_location=device)
    require_keys(payload, {"model", "model_config", "data_dim", "input_dim", "state_dict",
                           "standardizer"}, path)
    name = schema.field(payload, "model", str, where, CheckpointError)
    if name != config["model"]:
        raise CheckpointError(f"{where} holds model {name!r}, but {Path(run) / CONFIG} "
                              f"names {config['model']!r}")
    try:
        cls = model_class(name)
    except ConfigError as err:
        raise CheckpointError(f"{where}: {err}") from None
    dims = [schema.field(payload, key, int, where, CheckpointError)
            for key in ("data_dim", "input_dim")]
    if dims[0] < 1 or dims[1] < 0:
        raise CheckpointError(f"{where}: data_dim must be >= 1 and input_dim >= 0, got {dims}")
    model_config = schema.dataclass_from(cls.Config, payload["model_config"],
                                         f"{where}: 'model_config'", CheckpointError)
    state = _tensors(payload["state_dict"], f"{where}: 'state_dict'")
    check_sizes(cls, model_config, *dims, state, where)
    standardizer = _standardizer(payload["standardizer"], dims[0], where)
    model = cls.from_config(model_config, *dims)
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise CheckpointError(f"{where} does not match model {name!r}: {err}") from None
    model.to(device=device, dtype=evaluation_dtype(model))   # float64 but for conv frames
    return LoadedRun(model.eval(), config, standardizer)


def check_sizes(cls: type[DVAE], model_config: Any, data_dim: int, input_dim: int,
                state: dict[str, torch.Tensor], where: str) -> None:
    """Build the model on the meta device (which allocates no memory) and compare the
    shape of every tensor with ``state``'s, so that sizes a checkpoint declares
    (data_dim, hidden sizes, ...) but its weights do not have are caught before a model
    of those sizes is allocated."""
    try:
        with torch.device("meta"):
            skeleton = cls.from_config(model_config, data_dim, input_dim)
    except (ConfigError, ValueError, TypeError) as err:
        raise CheckpointError(f"{where}: {err}") from None
    expected = {key: tuple(value.shape) for key, value in skeleton.state_dict().items()}
    for problem, keys in (("lacks", expected.keys() - state.keys()),
                          ("has unexpected", state.keys() - expected.keys())):
        if keys:
            raise CheckpointError(f"{where} {problem} weights {sorted(keys)[:5]} for model "
                                  f"{cls.__name__} of its declared sizes")
    for key, shape in expected.items():
        if tuple(state[key].shape) != shape:
            raise CheckpointError(
                f"{where}: the declared sizes (data_dim={data_dim}, input_dim={input_dim}, "
                f"model_config) do not match the weights: {key!r} has shape "
                f"{tuple(state[key].shape)} in the file, {shape} for the declared model")


def _tensors(value: Any, where: str) -> dict[str, torch.Tensor]:
    state = schema.mapping_of(value, where, CheckpointError)
    for key, item in state.items():
        if not isinstance(item, torch.Tensor):
            raise CheckpointError(f"{where}: {key!r} is a {type(item).__name__}, not a tensor")
    return state


def _standardizer(value: Any, data_dim: int, where: str) -> Standardizer:
    state = schema.mapping_of(value, f"{where}: 'standardizer'", CheckpointError)
    try:
        standardizer = Standardizer.from_state_dict(state)
    except (ConfigError, ValueError, TypeError) as err:
        raise CheckpointError(f"{where}: 'standardizer': {err}") from None
    if standardizer.mean.shape != (data_dim,):
        raise CheckpointError(f"{where}: 'standardizer' has {standardizer.mean.size} "
                              f"features, data_dim is {data_dim}")
    return standardizer
