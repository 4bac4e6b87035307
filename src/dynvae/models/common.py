"""Helpers shared by the discrete-time deep models (DKF, VRNN): input checks,
encoder features, Monte Carlo predictive moments, importance weighting."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from typing import ClassVar

import torch
from torch import Tensor

from dynvae.data.batch import SequenceBatch
from dynvae.errors import ConfigError, DataError


def check_choice(field: str, value: str, choices: Mapping) -> None:
    """Raise ConfigError unless ``value`` is a key of ``choices``."""
    if value not in choices:
        raise ConfigError(f"unknown {field} {value!r}; choose one of {sorted(choices)}")


def check_positive(**values: float) -> None:
    """Raise ConfigError naming the first value that is not > 0."""
    for name, v in values.items():
        if not v > 0:
            raise ConfigError(f"{name} must be > 0, got {v}")


def check_observation(observation: str, free_emission_variance: bool, min_var: float) -> None:
    """Checks shared by the deep models' observation settings."""
    if min_var < 0:
        raise ConfigError(f"min_var must be >= 0, got {min_var}")
    if observation == "bernoulli" and free_emission_variance:
        raise ConfigError("free_emission_variance applies to the 'gaussian' observation only")


def resolved_free_variance(observation: str, free_emission_variance: bool | None) -> bool:
    """Whether a Gaussian observation's variance is one free parameter per data dimension:
    the default (None) for the Gaussian observation. A variance that is a function of z
    lets a model explain what it cannot reconstruct as noise instead of using its latents
    (the decoder's variance swallows the signal and the posterior collapses); a free one
    makes the mean carry the fit. Not applicable to the Bernoulli observation."""
    if observation != "gaussian":
        return False
    return True if free_emission_variance is None else free_emission_variance


def check_dims(data_dim: int, input_dim: int) -> None:
    """Raise ConfigError unless data_dim D > 0 and input_dim U >= 0."""
    check_positive(data_dim=data_dim)
    if input_dim < 0:
        raise ConfigError(f"input_dim must be >= 0, got {input_dim}")


class DictConfig:
    """Mixin for a model's Config dataclass: ``from_dict`` (strict) and ``to_dict``.
    ``model_name`` names the model in the error for unknown keys."""

    model_name: ClassVar[str] = "model"

    @classmethod
    def from_dict(cls, values: Mapping):
        """Build from a mapping (e.g. a saved config.json); unknown keys are an error."""
        unknown = set(values) - set(cls.__dataclass_fields__)
        if unknown:
            raise ConfigError(f"unknown {cls.model_name} config keys {sorted(unknown)}")
        return cls(**values)

    def to_dict(self) -> dict:
        return asdict(self)


def as_sizes(name: str, sizes: Sequence[int] | int) -> tuple[int, ...]:
    """Normalise hidden sizes (a list from JSON, a tuple or one int) to a tuple of ints."""
    sizes = (sizes,) if isinstance(sizes, int) else tuple(sizes)
    if any(not isinstance(s, int) or isinstance(s, bool) or s < 1 for s in sizes):
        raise ConfigError(f"{name} must be positive integers, got {sizes}")
    return sizes


def prepare_batch(batch: SequenceBatch, data_dim: int, input_dim: int,
                  like: Tensor) -> SequenceBatch:
    """Check the batch against the model's dims; move it to the parameters' dtype/device."""
    if batch.dim != data_dim:
        raise DataError(f"batch has D={batch.dim} channels, the model was built for {data_dim}")
    if input_dim > 0 and batch.u is None:
        raise DataError(f"the model takes {input_dim} control inputs but the batch has no u")
    if input_dim == 0 and batch.u is not None:
        raise DataError("the batch has control inputs u but the model was built with "
                        "input_dim=0")
    if batch.u is not None and batch.u.shape[-1] != input_dim:
        raise DataError(f"batch has U={batch.u.shape[-1]} inputs, the model expects {input_dim}")
    if batch.x.dtype != like.dtype or batch.x.device != like.device:
        batch = batch.to(device=like.device, dtype=like.dtype)
    return batch


def check_hide_rate(rate: float) -> None:
    if not 0.0 <= rate < 1.0:
        raise ConfigError(f"hide_from_encoder must lie in [0, 1), got {rate}")


def encoder_mask(batch: SequenceBatch, rate: float, training: bool) -> Tensor:
    """(B, T, D) bool: the entries the inference network reads.

    While training, each observed entry is hidden from it with probability ``rate``; the
    likelihood still scores the entry, so the model is taught to infer entries it does
    not see from their observed neighbours: imputation is what it learns (a denoising
    signal, as in Vincent et al. 2008, and the artificial missingness of Fortuin et al.
    2020). Any q gives a valid ELBO, so the bound stays a bound. A sequence that would
    lose every entry keeps its mask. In evaluation (``training`` False) this is the mask.
    """
    if not training or rate <= 0.0:
        return batch.mask
    keep = torch.rand(batch.mask.shape, device=batch.mask.device) >= rate
    hidden = batch.mask & keep
    emptied = ~hidden.flatten(1).any(1)                                     # (B,)
    return torch.where(emptied[:, None, None], batch.mask, hidden)


def observation_features(batch: SequenceBatch, mask: Tensor | None = None) -> Tensor:
    """(B, T, 2D + U) encoder input: [x * mask, mask, u]; missing entries are visible
    to the encoder only through the mask channel. ``mask`` (B, T, D) replaces the
    batch's (e.g. :func:`encoder_mask`)."""
    mask = batch.mask if mask is None else mask
    x = torch.where(mask, batch.x, torch.zeros_like(batch.x))
    parts = [x, mask.to(x.dtype)]
    if batch.u is not None:
        parts.append(batch.u)
    return torch.cat(parts, -1)


def check_future(batch: SequenceBatch, t_future: Tensor, u_future: Tensor | None,
                 input_dim: int) -> None:
    """Validate forecast times (B, H) after each sequence's last valid time, and inputs."""
    B = batch.batch_size
    if t_future.ndim != 2 or t_future.shape[0] != B or t_future.shape[1] < 1:
        raise DataError(f"t_future must have shape (B={B}, H) with H >= 1, got "
                        f"{tuple(t_future.shape)}")
    H = t_future.shape[1]
    t_last = last_valid(batch.t[..., None], batch.lengths)[:, 0]             # (B,)
    times = torch.cat([t_last[:, None], t_future.to(t_last)], 1)
    if not bool(torch.isfinite(t_future).all()) or bool((times[:, 1:] <= times[:, :-1]).any()):
        raise DataError("t_future must be finite, strictly increasing and after each "
                        "sequence's last time")
    if input_dim > 0 and (u_future is None or tuple(u_future.shape) != (B, H, input_dim)):
        got = None if u_future is None else tuple(u_future.shape)
        raise DataError(f"the model takes inputs: u_future of shape {(B, H, input_dim)} is "
                        f"needed, got {got}")


def check_sample_times(t: Tensor, u: Tensor | None, input_dim: int) -> int:
    """Validate sample times (T,) and optional inputs (T, U); return T."""
    if t.ndim != 1 or t.shape[0] < 1:
        raise DataError(f"t must have shape (T,) with T >= 1, got {tuple(t.shape)}")
    T = t.shape[0]
    if input_dim > 0 and (u is None or tuple(u.shape[-2:]) != (T, input_dim)):
        raise DataError(f"the model takes inputs: u of shape (T={T}, U={input_dim}) is needed")
    return T


def last_valid(x: Tensor, lengths: Tensor) -> Tensor:
    """Value at each sequence's last valid step: x (…, B, T, F), lengths (B,) -> (…, B, F)."""
    idx = (lengths.to(x.device) - 1).view(-1, 1, 1).expand(-1, 1, x.shape[-1])
    idx = idx.expand(*x.shape[:-3], *idx.shape)
    return x.gather(-2, idx).squeeze(-2)


def mixture_moments(means: Tensor, variances: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and std of an equal-weight mixture over the leading K axis (law of total
    variance): E[mean], sqrt(E[var] + Var[mean])."""
    mean = means.mean(0)
    var = variances.mean(0) + (means - mean).pow(2).mean(0)
    return mean, var.sqrt()


def log_mean_exp(log_w: Tensor) -> Tensor:
    """log (1/K) sum_k exp(log_w[k]) over the leading axis: (K, …) -> (…)."""
    return torch.logsumexp(log_w, 0) - math.log(log_w.shape[0])


IWAE_CHUNK = 64  # importance samples drawn at once by the IWAE bounds


def iwae_bound(log_weights: Callable[[int], Tensor], k: int) -> Tensor:
    """log (1/k) sum_k w_k, (B,), from ``log_weights(n)`` -> (n, B) log importance weights,
    drawn at most IWAE_CHUNK at a time to bound memory."""
    check_positive(k=k)
    log_w = [log_weights(min(IWAE_CHUNK, k - start)) for start in range(0, k, IWAE_CHUNK)]
    return log_mean_exp(torch.cat(log_w, 0))
