"""Checkpoint files: atomic writes, loading as data only, one clear error for a bad file.

A checkpoint holds tensors and plain values (dict, list, tuple, str, int, float, bool,
None) and nothing else. It is read with ``torch.load(weights_only=True)``, whose
unpickler builds only those types: a file carrying any other object (for instance one
whose ``__reduce__`` would run a command) is refused before anything in it runs.
"""

from __future__ import annotations

import os
import pickle
import re
from pathlib import Path
from typing import Any

import torch

from dynvae.errors import CheckpointError
from dynvae.utils import atomic_torch_save

FORMAT_VERSION = 1
_PLAIN = (str, int, float, bool, type(None), torch.Tensor, torch.dtype, torch.Size)


def save_checkpoint(path: str | os.PathLike, payload: dict[str, Any]) -> None:
    """Write ``payload`` (tensors, state dicts, plain Python values) atomically to ``path``.

    Raises TypeError for any other kind of value: it could not be loaded back as data.
    """
    _check_plain(payload, "payload")
    atomic_torch_save({"dynvae_checkpoint": FORMAT_VERSION, **payload}, path)


def _check_plain(value: Any, where: str) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            _check_plain(key, f"{where} key")
            _check_plain(item, f"{where}[{key!r}]")
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_plain(item, f"{where}[{i}]")
    elif not isinstance(value, _PLAIN):
        raise TypeError(f"checkpoint {where} is a {type(value).__name__}; checkpoints hold "
                        "only tensors and plain values")


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu"
                    ) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`, as data only.

    Raises :class:`CheckpointError` naming the file when it is missing, truncated,
    holds objects other than tensors and plain values, is not a checkpoint, or has an
    unknown format version.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        text = str(err)
        if "weights only" not in text.lower() or "Unsupported operand" in text:
            # not a pickle at all (e.g. a text file: torch reads its first byte as an
            # opcode it does not know): damaged, not a refused object
            raise CheckpointError(f"checkpoint {path} is corrupt or truncated, or not a "
                                  f"checkpoint at all") from None
        found = re.search(r"GLOBAL (\S+)", text)
        what = f" ({found.group(1)})" if found else ""
        raise CheckpointError(f"checkpoint {path} holds a Python object{what} besides tensors "
                              "and plain values; refused (checkpoints are loaded as data only)"
                              ) from None
    except Exception as err:  # torch raises several types for a damaged file
        raise CheckpointError(f"checkpoint {path} is corrupt or truncated "
                              f"({_first_sentence(err)})") from err
    if not isinstance(payload, dict) or "dynvae_checkpoint" not in payload:
        raise CheckpointError(f"{path} is not a dynvae checkpoint")
    if payload["dynvae_checkpoint"] != FORMAT_VERSION:
        raise CheckpointError(f"checkpoint {path} has format version "
                              f"{payload['dynvae_checkpoint']!r}, expected {FORMAT_VERSION}")
    return payload


def _first_sentence(err: Exception) -> str:
    """torch's messages run to several sentences or lines: the first sentence only."""
    return (str(err).strip().splitlines() or [type(err).__name__])[0].split(". ")[0]


def require_keys(payload: dict[str, Any], keys: set[str], path: str | os.PathLike) -> None:
    """Raise :class:`CheckpointError` naming ``path`` unless ``payload`` has every key."""
    missing = set(keys) - set(payload)
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks {sorted(missing)}")
