"""Image files of frame sequences drawn pixel for pixel (Pillow, not matplotlib): an
animated GIF of several sequences side by side, and a PNG strip with one row per
sequence and one column per time step. Both are written atomically.

Pixel values map linearly to 0..255 over [min(0, lowest value), max(1, highest value)]
of all frames together: image data on the [0, 1] scale (as every dynvae reader and
built-in image dataset gives it) keeps its grey levels, and values a Gaussian
observation draws outside [0, 1] are kept, not clipped. Frames are separated by a
one-pixel grey gap; frames under ``MIN_SIDE`` pixels are enlarged by an integer factor
(nearest neighbour) so that they can be seen.
"""

from __future__ import annotations

import io
import math
import os

import numpy as np

from dynvae.errors import ConfigError
from dynvae.utils import atomic_write_bytes, import_optional

MIN_SIDE = 64            # frames are enlarged until their longer side reaches this
GAP = 1                  # pixels between frames
GAP_LEVEL = 128          # their grey level: visible on black and on white backgrounds
FRAME_MS = 100           # display time of one GIF frame (10 frames per second)


def _image_module():
    return import_optional("PIL.Image", "video", "writing GIFs and PNG strips")


def to_bytes(frames: np.ndarray) -> np.ndarray:
    """(N, T, C, H, W) values -> uint8 levels (see the module docstring); NaN (a frame
    beyond a sequence's end) becomes 0."""
    frames = np.asarray(frames, dtype=np.float64)
    if frames.ndim != 5 or frames.shape[2] not in (1, 3):
        raise ConfigError(f"GIFs and strips draw frames (N, T, C, H, W) with C = 1 (grey) or "
                          f"3 (colour), got shape {frames.shape}")
    finite = frames[np.isfinite(frames)]
    lo = min(0.0, float(finite.min())) if finite.size else 0.0
    hi = max(1.0, float(finite.max())) if finite.size else 1.0
    levels = np.round((np.nan_to_num(frames, nan=lo) - lo) / (hi - lo) * 255.0)
    return np.clip(levels, 0, 255).astype(np.uint8)


def scale_factor(H: int, W: int) -> int:
    """Integer enlargement of an H x W frame (1 for frames of MIN_SIDE pixels or more)."""
    return max(1, math.ceil(MIN_SIDE / max(H, W)))


def tile(levels: np.ndarray) -> np.ndarray:
    """uint8 frames (R, K, C, H, W) -> one (rows, cols, C) image: R rows of K frames,
    each enlarged by :func:`scale_factor`, separated by GAP pixels of GAP_LEVEL."""
    R, K, C, H, W = levels.shape
    s = scale_factor(H, W)
    big = levels.repeat(s, axis=3).repeat(s, axis=4)                    # (R, K, C, sH, sW)
    h, w = s * H, s * W
    image = np.full((R * h + (R - 1) * GAP, K * w + (K - 1) * GAP, C), GAP_LEVEL,
                    dtype=np.uint8)
    for r in range(R):
        for k in range(K):
            top, left = r * (h + GAP), k * (w + GAP)
            image[top:top + h, left:left + w] = big[r, k].transpose(1, 2, 0)
    return image


def _pil(image: np.ndarray):
    Image = _image_module()
    return Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)


def write_strip(frames: np.ndarray, path: str | os.PathLike) -> None:
    """PNG strip of frames (N, T, C, H, W): row n is sequence n, column k time step k."""
    buf = io.BytesIO()
    _pil(tile(to_bytes(frames))).save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())


def write_gif(frames: np.ndarray, path: str | os.PathLike, frame_ms: int = FRAME_MS) -> None:
    """Animated GIF of frames (N, T, C, H, W): image k shows step k of the N sequences
    side by side; it loops forever, ``frame_ms`` milliseconds per image."""
    levels = to_bytes(frames)                                             # (N, T, C, H, W)
    images = [_pil(tile(levels[None, :, k])) for k in range(levels.shape[1])]
    buf = io.BytesIO()
    images[0].save(buf, format="GIF", save_all=True, append_images=images[1:],
                   duration=frame_ms, loop=0, optimize=False)
    atomic_write_bytes(path, buf.getvalue())
