"""Checkpoint files: atomic writes, and one clear error for a missing or corrupt file."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from dynvae.errors import CheckpointError
from dynvae.utils import atomic_torch_save

FORMAT_VERSION = 1


def save_checkpoint(path: str | os.PathLike, payload: dict[str, Any]) -> None:
    """Write ``payload`` (tensors, state dicts, plain Python values) atomically to ``path``."""
    atomic_torch_save({"dynvae_checkpoint": FORMAT_VERSION, **payload}, path)


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu"
                    ) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`.

    Raises :class:`CheckpointError` naming the file when it is missing, truncated,
    not a checkpoint, or of an unknown format version.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as err:  # torch raises several types for a damaged file
        # first sentence only: torch's messages run to several sentences or lines
        detail = (str(err).strip().splitlines() or [type(err).__name__])[0].split(". ")[0]
        raise CheckpointError(f"checkpoint {path} is corrupt or truncated ({detail})") from err
    if not isinstance(payload, dict) or "dynvae_checkpoint" not in payload:
        raise CheckpointError(f"{path} is not a dynvae checkpoint")
    if payload["dynvae_checkpoint"] != FORMAT_VERSION:
        raise CheckpointError(f"checkpoint {path} has format version "
                              f"{payload['dynvae_checkpoint']}, expected {FORMAT_VERSION}")
    return payload
