"""Reader of image sequences stored as a folder of image files per sequence:

    DIR/<sequence id>/<frame files, in the order of their names>

Every file Pillow can read (PNG, JPEG, ...) is a frame. Grayscale images give one
channel, colour images three (an alpha channel is dropped, a palette is expanded);
values are scaled to [0, 1] (8-bit by 255, 16-bit by 65535). Every frame of every
sequence must have the same size and channel count; sequences may have different
lengths (padded as any variable-length data). Frame k of a sequence has time k. The
frames are stored flat, channel-major, with the dataset's ``frame_shape`` (C, H, W),
as :func:`dynvae.data.io.from_numpy` stores (N, T, C, H, W) arrays, so a folder and
the array of the same frames give the same batch.

Pillow is an optional dependency (``pip install 'dynvae[video]'``).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from dynvae.data.dataset import Sequence, SequenceDataset
from dynvae.data.io import refuse_table_options
from dynvae.errors import DataError

GRAY_MODES = {"1": 255.0, "L": 255.0, "LA": 255.0, "I;16": 65535.0, "I;16B": 65535.0,
              "I;16L": 65535.0, "I": 65535.0}          # mode -> full scale (after convert)
COLOUR_MODES = ("RGB", "RGBA", "P", "PA", "CMYK", "YCbCr")


def _pillow():
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError:
        raise DataError("reading folders of image files needs Pillow: pip install "
                        "'dynvae[video]'") from None
    return Image, UnidentifiedImageError


def is_image_folder_tree(path) -> bool:
    """True when ``path`` is a folder holding at least one (non-hidden) folder."""
    path = Path(os.fspath(path))
    return path.is_dir() and any(p.is_dir() for p in _entries(path))


def _entries(folder: Path) -> list[Path]:
    """The non-hidden entries of ``folder``, sorted by name."""
    return sorted((p for p in folder.iterdir() if not p.name.startswith(".")),
                  key=lambda p: p.name)


def read_frame(path: Path) -> np.ndarray:
    """One image file -> (C, H, W) float64 in [0, 1]; DataError naming the file if
    Pillow cannot read it or its mode is not grayscale or colour."""
    Image, UnidentifiedImageError = _pillow()
    try:
        with Image.open(path) as image:
            image.load()
            mode = image.mode
            if mode in GRAY_MODES:
                scale = GRAY_MODES[mode]
                image = image.convert("L") if mode in ("1", "LA") else image
                pixels = np.asarray(image, dtype=np.float64)[None]          # (1, H, W)
            elif mode in COLOUR_MODES:
                scale = 255.0
                pixels = np.asarray(image.convert("RGB"), dtype=np.float64)
                pixels = pixels.transpose(2, 0, 1)                           # (3, H, W)
            else:
                raise DataError(f"image {path} has mode {mode!r}; grayscale (L, 1, I;16) "
                                f"or colour (RGB, RGBA, P) images are read")
    except UnidentifiedImageError:
        raise DataError(f"{path} is not an image file Pillow can read") from None
    except OSError as err:
        raise DataError(f"cannot read image {path}: {err}") from None
    return pixels / scale


def read_image_folders(path, id_col=None, time_col=None, value_cols=None, input_cols=None,
                       date_format=None) -> SequenceDataset:
    """Read ``DIR/<sequence id>/<frames>`` (see the module docstring) into a dataset
    with ``frame_shape`` (C, H, W). Column keywords do not apply (DataError if given)."""
    refuse_table_options("a folder of image folders has one frame per file",
                         id_col=id_col, time_col=time_col, value_cols=value_cols,
                         input_cols=input_cols, date_format=date_format)
    root = Path(os.fspath(path))
    if not root.is_dir():
        raise DataError(f"not a folder: {root}")
    entries = _entries(root)
    stray = [p for p in entries if not p.is_dir()]
    if not entries or stray:
        raise DataError(f"{root} must hold one folder of image files per sequence"
                        + (f"; {stray[0]} is not a folder" if stray else "; it is empty"))
    sequences, shape, first = [], None, None
    for folder in entries:
        files = _entries(folder)
        if not files:
            raise DataError(f"sequence folder {folder} holds no image files")
        frames = []
        for file in files:
            if file.is_dir():
                raise DataError(f"{file} is a folder; a sequence folder holds image files only")
            pixels = read_frame(file)                                        # (C, H, W)
            if shape is None:
                shape, first = pixels.shape, file
            elif pixels.shape != shape:
                raise DataError(f"{file} has {_describe(pixels.shape)}, but {first} has "
                                f"{_describe(shape)}: every frame must have the same size "
                                f"and channels")
            frames.append(pixels.reshape(-1))
        x = np.stack(frames)                                                 # (T, C*H*W)
        sequences.append(Sequence(t=np.arange(len(frames), dtype=np.float64), x=x,
                                  id=folder.name))
    C, H, W = (int(s) for s in shape)
    names = [f"pixel{c}_{r}_{w}" for c in range(C) for r in range(H) for w in range(W)]
    return SequenceDataset(sequences, names, [], frame_shape=(C, H, W))


def _describe(shape: tuple[int, ...]) -> str:
    C, H, W = shape
    return f"{W}x{H} pixels with {C} channel{'s' if C > 1 else ''}"
