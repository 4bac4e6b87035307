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


KL_DIM_PREFIX = "kl_dim"   # history columns kl_dim0, kl_dim1, ...: KL per time step per dim


def kl_dim_columns(row: dict) -> list[str]:
    """The per-dimension KL columns of a history row, in dimension order."""
    keys = [k for k in row if k.startswith(KL_DIM_PREFIX) and k[len(KL_DIM_PREFIX):].isdigit()]
    return sorted(keys, key=lambda k: int(k[len(KL_DIM_PREFIX):]))


def collapse_report(history: list[dict], anneal_steps: int, threshold: float,
                    window: int = 50) -> tuple[int, int, str | None]:
    """(active dims, latent dims, warning or None) from the per-dimension KL of the
    training steps after the warm-up (the mean of the last ``window`` of them).

    A latent dimension is active when its KL per time step exceeds ``threshold`` nats:
    an inactive one carries no information about the data (the posterior equals the
    prior there, Burda et al. 2016, Sec. 5.2). With none active the model has collapsed
    onto its prior and the decoder ignores the latents: the warning says what to try.
    """
    after = [r for r in history if r.get("step", 0) > anneal_steps and kl_dim_columns(r)]
    if not after:
        return 0, 0, None
    rows = after[-window:]
    columns = kl_dim_columns(rows[-1])
    means = [sum(float(r[c]) for r in rows) / len(rows) for c in columns]
    active = sum(m > threshold for m in means)
    if active:
        return active, len(columns), None
    return 0, len(columns), (
        f"posterior collapse: after the KL warm-up the KL per time step of every one of the "
        f"{len(columns)} latent dimensions stayed below {threshold:g} nats (largest "
        f"{max(means):.2g}), so the model ignores its latents; try a longer warm-up "
        "(--set kl_anneal_steps=N), free bits (--set free_bits=0.1) or beta < 1")


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
