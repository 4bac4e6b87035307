"""Small shared utilities: atomic file writes, seeding."""

from __future__ import annotations

import importlib
import json
import os
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from dynvae.errors import MissingDependencyError


def _default_file_mode() -> int:
    """The permissions a plain ``open(path, "w")`` would give: 0o666 minus the umask."""
    try:  # Linux reports the umask without changing it (no window for other threads)
        status = Path("/proc/self/status").read_text()
        umask = int(next(ln.split()[1] for ln in status.splitlines() if ln.startswith("Umask:")), 8)
    except (OSError, StopIteration, ValueError, IndexError):
        umask = os.umask(0o022)
        os.umask(umask)
    return 0o666 & ~umask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically: a temporary file in the same folder is
    fsynced and renamed over the target, so readers never see a partial file. The file
    gets the usual permissions (those of an existing target, else 0o666 minus the umask),
    not the private mode of a temporary file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = path.stat().st_mode & 0o7777 if path.exists() else _default_file_mode()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=float) + "\n")


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """torch.save through a temporary file and an atomic rename."""
    import io

    import torch
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch generators."""
    import torch
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002 - seeds the legacy global generator third-party code uses
    torch.manual_seed(seed)


def broadcast_shapes(*shapes):
    """``torch.broadcast_shapes`` without its cost on first use: torch's version imports
    sympy then (1-2 s of a command's start-up). NumPy applies the same rules to plain
    integer sizes; symbolic sizes (under torch.compile) and errors go to torch's."""
    import torch
    sizes = [tuple(s) for s in shapes]
    if all(type(d) is int for s in sizes for d in s):
        try:
            return torch.Size(np.broadcast_shapes(*sizes))
        except ValueError:
            pass                                 # torch raises its own error below
    return torch.broadcast_shapes(*shapes)


def import_optional(module: str, extra: str, purpose: str):
    """Import ``module`` (an optional dependency) or raise :class:`MissingDependencyError`
    telling the user to ``pip install 'dynvae[extra]'`` for ``purpose``."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise MissingDependencyError(
            f"{purpose} needs the package {module.split('.')[0]!r}, which is not installed: "
            f"pip install 'dynvae[{extra}]'") from err
