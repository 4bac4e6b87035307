"""Training history: per-step rows, the metrics CSV, and the KL warm-up schedule."""

from __future__ import annotations

import csv
import io
import math
import os

from dynvae.utils import atomic_write_text


def kl_weight(step: int, anneal_steps: int, final: float = 1.0) -> float:
    """Linear KL warm-up beta: 0 -> ``final`` over ``anneal_steps`` steps (Sønderby et al.
    2016); ``final`` < 1 down-weights the KL for good (the beta-VAE weight of Higgins et
    al. 2017, 0.8 in Fortuin et al. 2020's GP-VAE).

    ``step`` counts from 0 for the first update; ``anneal_steps = 0`` means beta = final.
    """
    if anneal_steps <= 0:
        return final
    return final * min(1.0, step / anneal_steps)


def write_metrics_csv(path: str | os.PathLike, history: list[dict]) -> None:
    """Rewrite ``path`` atomically with one row per history entry.

    Columns are the union of the rows' keys in order of first appearance; a value a
    row lacks (e.g. the validation bound between evaluations) is left empty.
    """
    columns: list[str] = []
    for row in history:
        columns.extend(k for k in row if k not in columns)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, restval="", lineterminator="\n")
    writer.writeheader()
    for row in history:
        writer.writerow({k: _format(v) for k, v in row.items()})
    atomic_write_text(path, buf.getvalue())


def _format(value):
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else str(value)
    return value
