"""Frame outputs of the sub-commands that predict or draw from a run on image data:
arrays of frames (``--frames``, impute and forecast) and GIFs and PNG strips
(``--gif``, ``--strip``, sample). None is written over an existing file without
``--force``."""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import numpy as np

from dynvae.errors import ConfigError

FRAME_FLAGS = ("frames", "gif", "strip")


def add_force_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--force", action="store_true", help="replace existing "
                        "--frames/--gif/--strip files")


def check_frame_outputs(args: argparse.Namespace) -> None:
    """ConfigError for a frame output that exists (without --force), is not writable, or
    has the wrong suffix; called before any work is done."""
    from dynvae.train import run as rundir
    suffixes = {"frames": (".npy", ".npz"), "gif": (".gif",), "strip": (".png",)}
    for flag in FRAME_FLAGS:
        path = getattr(args, flag, None)
        if not path:
            continue
        if Path(path).suffix.lower() not in suffixes[flag]:
            raise ConfigError(f"--{flag} {path}: the file name must end in "
                              f"{' or '.join(suffixes[flag])}")
        if Path(path).exists() and not getattr(args, "force", False):
            raise ConfigError(f"--{flag} {path} exists; give --force to replace it")
        rundir.check_writable(path, f"--{flag}")


def run_frame_shape(config: dict, what: str) -> tuple[int, int, int]:
    """The frame shape (C, H, W) of a run's training data, from its config.json; one
    ConfigError naming ``what`` needs it when the run was trained on vector data."""
    shape = config.get("config", {}).get("model", {}).get("frame_shape") or \
        config.get("data_choices", {}).get("frame_shape")
    if not shape:
        raise ConfigError(f"{what} needs a run trained on image frames (data with a frame "
                          f"shape (C, H, W): a (N, T, H, W) array, a folder of image "
                          f"folders or an image dataset); this run's data are vectors")
    return tuple(int(s) for s in shape)


def data_frame_shape(data, what: str) -> tuple[int, int, int]:
    """The frame shape (C, H, W) of a dataset; one ConfigError for vector data."""
    shape = getattr(data, "frame_shape", None)
    if shape is None:
        raise ConfigError(f"{what} needs image frames (data with a frame shape (C, H, W): "
                          f"a (N, T, H, W) array, a folder of image folders or an image "
                          f"dataset); these data are vectors of D={data.dim} features")
    return tuple(int(s) for s in shape)


def as_frames(values: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """Flat frames (N, T, C*H*W) -> (N, T, C, H, W)."""
    return values.reshape(*values.shape[:2], *shape)


def write_frame_arrays(path: str, main: np.ndarray, **extra: np.ndarray) -> None:
    """``path`` ending in .npy: the array ``main``; in .npz: ``extra`` arrays by name
    (which include ``main`` under its name). Written atomically."""
    from dynvae.utils import atomic_write_bytes
    buf = io.BytesIO()
    if Path(path).suffix.lower() == ".npy":
        np.save(buf, main)
    else:
        np.savez(buf, **extra)
    atomic_write_bytes(path, buf.getvalue())
