"""Bach four-part chorales as binary piano rolls (a JSB-chorales-like dataset).

The chorales ship with music21's corpus (no download). Each piece becomes a (T, 88)
binary roll over the piano keys MIDI 21..108 on quarter-note frames: key k is on at
frame t when a note of pitch k sounds at the start of beat t, the sampling of the
JSB benchmark (Boulanger-Lewandowski et al. 2012). Parsing takes a while, so the rolls
are cached (atomically, as one ``.npz``) in ``$DYNVAE_CACHE`` or ``~/.cache/dynvae``.
"""

from __future__ import annotations

import io
import math
import os
from pathlib import Path

import numpy as np

from dynvae.data.dataset import Sequence, SequenceDataset
from dynvae.errors import ConfigError, DataError
from dynvae.progress import progress_bar
from dynvae.utils import atomic_write_bytes, import_optional

LOWEST_KEY, HIGHEST_KEY = 21, 108  # MIDI numbers of A0 and C8
N_KEYS = HIGHEST_KEY - LOWEST_KEY + 1
SPLITS = {"train": 0, "valid": 1, "test": 2}
SPLIT_FRACTIONS = (0.6, 0.2, 0.2)  # close to JSB's 229 / 76 / 77 pieces
SPLIT_SEED = 0
CACHE_VERSION = 1


def cache_dir() -> Path:
    """Where built-in datasets are cached: ``$DYNVAE_CACHE`` or ``~/.cache/dynvae``."""
    root = os.environ.get("DYNVAE_CACHE")
    return Path(root) if root else Path.home() / ".cache" / "dynvae"


def piano_roll(score) -> np.ndarray:
    """(T, 88) {0, 1} roll of a music21 score on quarter-note frames, T = ceil(length)."""
    n_frames = max(1, math.ceil(float(score.highestTime)))
    roll = np.zeros((n_frames, N_KEYS), dtype=np.uint8)
    for element in score.flatten().notes:
        start = float(element.offset)
        end = start + float(element.duration.quarterLength)
        frames = np.arange(math.ceil(start), math.ceil(end))  # beats the note sounds at
        for pitch in element.pitches:
            if LOWEST_KEY <= pitch.midi <= HIGHEST_KEY:
                roll[frames[frames < n_frames], pitch.midi - LOWEST_KEY] = 1
    return roll


def _parse_corpus(max_pieces: int | None, progress: bool) -> tuple[list[str], list[np.ndarray]]:
    """Parse the four-part chorales of music21's corpus (first ``max_pieces`` of them)."""
    music21 = import_optional("music21", "datasets", "the 'chorales' dataset")
    names = list(dict.fromkeys(music21.corpus.chorales.Iterator(returnType="filename")))
    ids, rolls = [], []
    bar = progress_bar(max_pieces or len(names), "parsing chorales (once; cached after)",
                       unit="piece", enabled=progress)
    for name in names:
        if max_pieces is not None and len(ids) >= max_pieces:
            break
        score = music21.corpus.parse(name)
        if len(score.parts) != 4:
            continue
        roll = piano_roll(score)
        if not roll.any():
            continue
        ids.append(str(name))
        rolls.append(roll)
        bar.update(1)
    bar.close()
    return ids, rolls


def _cache_path(directory: Path, max_pieces: int | None) -> Path:
    tag = "all" if max_pieces is None else f"first{max_pieces}"
    return directory / f"chorales-v{CACHE_VERSION}-{tag}.npz"


def _save(path: Path, ids: list[str], rolls: list[np.ndarray]) -> None:
    buf = io.BytesIO()
    lengths = np.array([r.shape[0] for r in rolls], dtype=np.int64)
    np.savez(buf, ids=np.array(ids), lengths=lengths, rolls=np.concatenate(rolls, axis=0))
    atomic_write_bytes(path, buf.getvalue())


def _load(path: Path) -> tuple[list[str], list[np.ndarray]]:
    try:
        with np.load(path) as data:
            ids, lengths, flat = list(data["ids"]), data["lengths"], data["rolls"]
    except Exception as err:  # a damaged cache: name it so it can be deleted
        raise DataError(f"the chorales cache {path} is unreadable ({err}); delete it to "
                        "parse the corpus again") from err
    bounds = np.cumsum([0, *lengths])
    return [str(i) for i in ids], [flat[a:b] for a, b in zip(bounds[:-1], bounds[1:],
                                                            strict=True)]


def chorale_rolls(max_pieces: int | None = None, cache: str | os.PathLike | None = None,
                  progress: bool = False) -> tuple[list[str], list[np.ndarray]]:
    """Piece ids and (T, 88) uint8 rolls, parsed once and then read from the cache."""
    if max_pieces is not None and max_pieces < 3:
        raise ConfigError(f"max_pieces must be >= 3 (one piece per split), got {max_pieces}")
    path = _cache_path(Path(cache) if cache is not None else cache_dir(), max_pieces)
    if path.is_file():
        return _load(path)
    ids, rolls = _parse_corpus(max_pieces, progress)
    _save(path, ids, rolls)
    return ids, rolls


def load_chorales(split: str = "train", max_pieces: int | None = None,
                  cache: str | os.PathLike | None = None,
                  progress: bool = False) -> SequenceDataset:
    """Bach chorales as binary piano rolls: sequences (T, 88), t = beat index 0..T-1.

    split: "train", "valid", "test" (a fixed 60/20/20 split by piece) or "all".
    max_pieces: parse only the first pieces of the corpus (fast tests).
    cache: cache folder (default ``$DYNVAE_CACHE`` or ``~/.cache/dynvae``).
    """
    if split not in (*SPLITS, "all"):
        raise ConfigError(f"unknown chorales split {split!r}; one of {[*SPLITS, 'all']}")
    ids, rolls = chorale_rolls(max_pieces, cache, progress)
    names = [f"midi{k}" for k in range(LOWEST_KEY, HIGHEST_KEY + 1)]
    sequences = [Sequence(t=np.arange(r.shape[0], dtype=np.float64), x=r.astype(np.float64),
                          id=i) for i, r in zip(ids, rolls, strict=True)]
    dataset = SequenceDataset(sequences, names, time_unit="beats")
    if split == "all":
        return dataset
    return dataset.split(SPLIT_FRACTIONS, seed=SPLIT_SEED)[SPLITS[split]]
