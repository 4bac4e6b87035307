"""The run directory written by ``dynvae train --out RUN`` (DESIGN.md, "Run directory").

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from dynvae.data import Standardizer
from dynvae.errors import CheckpointError, ConfigError
from dynvae.models.base import DVAE
from dynvae.models.registry import model_class
from dynvae.train.checkpoint import load_checkpoint, save_checkpoint
from dynvae.utils import atomic_write_json, atomic_write_text

CONFIG, METRICS, CURVE, MODEL = "config.json", "metrics.json", "metrics.csv", "checkpoints/model.pt"


def check_run_dir(path: str | os.PathLike, force: bool) -> Path:
    """Refuse ``path`` if it is a file, or an existing non-empty directory unless ``force``."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise FileExistsError(f"{path} exists and is not a directory")
    if path.is_dir() and any(path.iterdir()) and not force:
        raise FileExistsError(f"run directory {path} exists and is not empty; pass --force "
                              "to overwrite it")
    return path


def prepare_run_dir(path: str | os.PathLike, force: bool) -> Path:
    """Create ``path``; refuse an existing non-empty directory unless ``force``."""
    path = check_run_dir(path, force)
    (path / "checkpoints").mkdir(parents=True, exist_ok=True)
    (path / "plots").mkdir(parents=True, exist_ok=True)
    return path


def write_config(run: Path, config: dict[str, Any]) -> None:
    atomic_write_json(run / CONFIG, config)


def read_config(run: str | os.PathLike) -> dict[str, Any]:
    path = Path(run) / CONFIG
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: is {run} a dynvae run directory?")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ConfigError(f"{path} is not valid JSON: {err}") from None


def write_metrics(run: Path, metrics: dict[str, float]) -> None:
    """metrics.json: flat name -> finite number pairs (non-finite values become null)."""
    clean = {k: (float(v) if math.isfinite(float(v)) else None) for k, v in metrics.items()}
    atomic_write_json(run / METRICS, clean)


def read_metrics(run: str | os.PathLike) -> dict[str, float]:
    path = Path(run) / METRICS
    return json.loads(path.read_text()) if path.is_file() else {}


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
    """Rebuild the model of a run from its checkpoint (clear errors if damaged)."""
    config = read_config(run)
    payload = load_checkpoint(Path(run) / MODEL, map_location=device)
    missing = {"model", "model_config", "data_dim", "input_dim", "state_dict",
               "standardizer"} - set(payload)
    if missing:
        raise CheckpointError(f"checkpoint {Path(run) / MODEL} lacks {sorted(missing)}")
    cls = model_class(payload["model"])
    model = cls.from_config(cls.Config(**payload["model_config"]), payload["data_dim"],
                            payload["input_dim"])
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as err:
        raise CheckpointError(f"checkpoint {Path(run) / MODEL} does not match model "
                              f"{payload['model']!r}: {err}") from None
    model.to(device=device, dtype=torch.float64)   # evaluation runs in float64
    return LoadedRun(model.eval(), config, Standardizer.from_state_dict(payload["standardizer"]))
