"""Posterior collapse: the free-bits KL of the training loss and the diagnostic of
inactive latent dimensions (per-dimension KL columns of the training history)."""

from __future__ import annotations

import torch

from dynvae.errors import ConfigError

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
        "(TrainConfig kl_anneal_steps=N; --set kl_anneal_steps=N on the command line), "
        "free bits (free_bits=0.1) or beta < 1")


def free_bits_kl(terms, n_steps: torch.Tensor, free_bits: float, model_name: str
                 ) -> torch.Tensor:
    """sum_b kl_b, or with free bits (Kingma et al. 2016, eq. 5, per latent dimension over
    the batch) sum_z max(sum_b kl_bz, free_bits * steps): a dimension whose KL is under the
    floor gets no gradient pushing it to the prior, which keeps latents from collapsing
    early in training. ``terms``: ELBOTerms; ``n_steps``: valid time steps of the batch."""
    if free_bits <= 0:
        return terms.kl.sum()
    if terms.kl_dims is None:
        raise ConfigError(f"free_bits needs the KL per latent dimension (ELBOTerms.kl_dims), "
                          f"which {model_name} does not report; set free_bits=0")
    return torch.maximum(terms.kl_dims.sum(0), free_bits * n_steps).sum()


def kl_columns(terms, n_steps: torch.Tensor) -> dict[str, float]:
    """History columns: kl_per_step and, when the model splits its KL, kl_dim0, ... (nats
    per time step of the batch)."""
    row = {"kl_per_step": float(terms.kl.detach().sum() / n_steps)}
    if terms.kl_dims is not None:
        per_dim = (terms.kl_dims.detach().sum(0) / n_steps).tolist()
        row.update({f"{KL_DIM_PREFIX}{i}": v for i, v in enumerate(per_dim)})
    return row
