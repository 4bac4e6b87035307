"""Helpers shared by the discrete-time deep models (DKF, VRNN, STORN, SRNN, RVAE, DSAE):
input checks, encoder features, forecast steps, Monte Carlo predictive moments,
importance weighting."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from typing import ClassVar

import torch
from torch import Tensor

from dynvae.data.batch import SequenceBatch
from dynvae.errors import ConfigError, DataError
from dynvae.gaussian import diag_gaussian_log_prob, kl_diag_gaussians
from dynvae.timegrid import check_time_grid


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


def check_hide_rate(rate: float, name: str = "hide_from_encoder") -> None:
    if not 0.0 <= rate < 1.0:
        raise ConfigError(f"{name} must lie in [0, 1), got {rate}")


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


def observation_features(batch: SequenceBatch, mask: Tensor | None = None,
                         fill: str = "zero") -> Tensor:
    """(B, T, 2D + U) encoder input: [x filled, mask, u]. ``mask`` (B, T, D) replaces the
    batch's (e.g. :func:`encoder_mask`); u is 0 on padding steps (an encoder that reads
    neighbouring steps must not see what lies beyond a sequence's end).

    fill: what unseen entries of x hold. "zero": 0, seen through the mask channel only.
    "carry": the entry's last seen value (:func:`carried_forward`, 0 before its first):
    causal, so causal encoders and networks inside a generative recurrence (e.g. the
    VRNN's phi_x) may use it. "steps" / "time": the linear interpolation,
    in step index (discrete-time models) or in time t (continuous-time models),
    between the feature's nearest seen values before and after (the nearest one at
    either end of the sequence, 0 when the feature is never seen): an encoder then
    starts from what linear interpolation knows. It reads values after step t, so only
    inference networks that read the future anyway may use it. Either way only seen
    entries of the sequence itself enter: masked values and padding change nothing."""
    mask = batch.mask if mask is None else mask
    x = torch.where(mask, batch.x, torch.zeros_like(batch.x))
    if fill in ("steps", "time"):
        t = batch.t if fill == "time" else torch.arange(
            x.shape[1], dtype=x.dtype, device=x.device).expand(x.shape[:2])
        x = torch.where(mask, x, linear_fill(x, mask, t, batch.valid))
    elif fill == "carry":
        x = carried_forward(x, mask)
    elif fill != "zero":
        raise ValueError(f"fill must be 'zero', 'carry', 'steps' or 'time', got {fill!r}")
    parts = [x, mask.to(x.dtype)]
    if batch.u is not None:
        parts.append(torch.where(batch.valid[..., None], batch.u, torch.zeros_like(batch.u)))
    return torch.cat(parts, -1)


def linear_fill(x: Tensor, mask: Tensor, t: Tensor, valid: Tensor) -> Tensor:
    """(B, T, D): at every valid step, the linear interpolation in time ``t`` (B, T) of
    each feature's nearest ``mask``ed-in values of ``x`` before and after the step (the
    nearest one where only one side has any; 0 where none); 0 on padding (``valid``
    (B, T) False). ``x`` must be finite (zero where unseen)."""
    B, T, D = x.shape
    steps = torch.arange(T, device=x.device).view(1, T, 1).expand(B, T, D)
    before = torch.where(mask, steps, torch.full_like(steps, -1)).cummax(1).values
    after = torch.where(mask, steps, torch.full_like(steps, T)).flip(1).cummin(1).values
    after = after.flip(1)                                                 # (B, T, D)
    p, n = before.clamp(0, T - 1), after.clamp(0, T - 1)
    tt = torch.where(valid, t, torch.zeros_like(t))[..., None].expand(B, T, D)
    x_p, x_n, t_p, t_n = x.gather(1, p), x.gather(1, n), tt.gather(1, p), tt.gather(1, n)
    span = torch.where(n > p, t_n - t_p, torch.ones_like(tt))
    w = ((tt - t_p) / span).clamp(0.0, 1.0)
    has_before, has_after = before >= 0, after < T
    zero = torch.zeros_like(x)
    fill = torch.where(has_before, torch.where(has_after, x_p + w * (x_n - x_p), x_p),
                       torch.where(has_after, x_n, zero))
    return torch.where(valid[..., None], fill, zero)


STEP_TOLERANCE = 0.25  # a discrete-time t_future may be off the grid by a quarter step


def check_inputs(name: str, u: Tensor | None, shapes: Sequence[tuple[int, ...]],
                 input_dim: int) -> None:
    """Raise DataError unless inputs ``u`` are given exactly when the model takes them
    (input_dim > 0), with one of the ``shapes`` (each ending in input_dim) and finite."""
    if input_dim == 0:
        if u is not None:
            raise DataError(f"the model was built without control inputs (input_dim=0) but "
                            f"{name} was given")
        return
    if u is None or tuple(u.shape) not in [tuple(s) for s in shapes]:
        got = None if u is None else tuple(u.shape)
        wanted = " or ".join(str(tuple(s)) for s in shapes)
        raise DataError(f"the model takes {input_dim} control inputs: {name} of shape "
                        f"{wanted} is needed, got {got}")
    if not bool(torch.isfinite(u).all()):
        raise DataError(f"{name} contains NaN or inf")


def check_future(batch: SequenceBatch, t_future: Tensor, u_future: Tensor | None,
                 input_dim: int) -> None:
    """Validate forecast times (B, H): finite, strictly increasing, after each sequence's
    last valid time; and the inputs u_future (B, H, U) (see :func:`check_inputs`)."""
    B = batch.batch_size
    if t_future.ndim != 2 or t_future.shape[0] != B or t_future.shape[1] < 1:
        raise DataError(f"t_future must have shape (B={B}, H) with H >= 1, got "
                        f"{tuple(t_future.shape)}")
    t_last = last_valid(batch.t[..., None], batch.lengths)[:, 0]             # (B,)
    early = t_future.to(t_last) <= t_last[:, None]                           # (B, H)
    if bool(early.any()):
        b, h = (int(i) for i in early.nonzero()[0])
        raise DataError(f"t_future must lie after each sequence's last time (sequence {b}: "
                        f"t_future {float(t_future[b, h]):g} is not after its last time "
                        f"{float(t_last[b]):g})")
    check_time_grid(t_future, name="t_future")
    check_inputs("u_future", u_future, [(B, t_future.shape[1], input_dim)], input_dim)


def median_steps(t: Tensor, lengths: Tensor) -> Tensor:
    """(B,) each sequence's median step over its ``lengths`` valid times t (B, T) (numpy's
    median: the mean of the two middle steps for an even count; 1 for a one-step
    sequence), in the dtype of t."""
    return torch.stack([t[b, :n].diff().quantile(0.5) if n > 1 else t.new_ones(())
                        for b, n in enumerate(lengths.tolist())])


def steps_ahead(batch: SequenceBatch, t_future: Tensor) -> Tensor:
    """(B, H) integer steps k >= 1 after each sequence's last valid time, for
    discrete-time models: t_future = t_last + k dt, k = round((t_future - t_last) / dt),
    with dt the median step of the sequence (the mean of the two middle steps for an
    even count, as numpy's median, which ``dynvae forecast`` uses; 1 for a one-step
    sequence); times more than a quarter step off that grid raise DataError."""
    check_future(batch, t_future, None, 0)
    t = batch.t.to(torch.float64).cpu()
    tf = t_future.to(torch.float64).cpu()
    steps = torch.empty(tf.shape, dtype=torch.long)
    dts = median_steps(t, batch.lengths)
    for b in range(batch.batch_size):
        n, dt = int(batch.lengths[b]), float(dts[b])
        ratio = (tf[b] - t[b, n - 1]) / dt
        k = ratio.round()
        off = ((ratio - k).abs() > STEP_TOLERANCE) | (k < 1)
        if bool(off.any()):
            h = int(off.nonzero()[0, 0])
            raise DataError(f"the model is discrete-time: t_future of sequence {b} must be "
                            f"t_last + k * dt with integer k >= 1, t_last = "
                            f"{float(t[b, n - 1]):g} and dt = {dt:g} (its median step); "
                            f"t_future[{b}, {h}] = {float(tf[b, h]):g} is off that grid")
        steps[b] = k.long()
    return steps.to(batch.x.device)


def forecast_steps(batch: SequenceBatch, t_future: Tensor, u_future: Tensor | None,
                   input_dim: int) -> Tensor:
    """Validated steps ahead (B, H) of a discrete-time forecast (:func:`steps_ahead`).
    With inputs, ``u_future`` (B, H, U) gives u at steps 1..H, so t_future must be
    exactly the next H steps."""
    k = steps_ahead(batch, t_future)
    check_inputs("u_future", u_future, [(*k.shape, input_dim)], input_dim)
    if input_dim > 0 and not bool((k == torch.arange(1, k.shape[1] + 1,
                                                     device=k.device)).all()):
        raise DataError("with control inputs, t_future must be the next H consecutive steps "
                        "of each sequence (u_future gives u at each of them)")
    return k


def at_steps(x: Tensor, k: Tensor) -> Tensor:
    """Entries of x (…, B, S, F) at steps k (B, H) (1-based, k <= S) -> (…, B, H, F)."""
    idx = (k - 1).to(x.device)[..., None].expand(*k.shape, x.shape[-1])      # (B, H, F)
    return x.gather(-2, idx.expand(*x.shape[:-3], *idx.shape))


def check_sample_times(t: Tensor, u: Tensor | None, input_dim: int,
                       n: int | None = None, even: bool = False) -> int:
    """Validate sample times (T,) (finite, strictly increasing) and inputs u, (T, U) or
    (n, T, U), given exactly when the model takes inputs; return T. ``even``: a
    discrete-time model (without time-gap inputs) draws at consecutive steps, so
    unevenly spaced t (a step more than STEP_TOLERANCE off the median one) is warned
    about, as its ELBO warns about irregular data, rather than silently relabelled."""
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise DataError(f"the number of samples n must be a positive integer, got {n!r}")
    check_time_grid(t, name="t", ndim=1)
    if even and t.shape[0] > 2:
        steps = torch.diff(t.detach().to(torch.float64).cpu())
        dt = float(steps.median())
        if bool(((steps - dt).abs() > STEP_TOLERANCE * dt).any()):
            warnings.warn(f"the model is discrete-time: it draws at consecutive steps and "
                          f"labels them with the sample times t, which are not evenly "
                          f"spaced (steps from {float(steps.min()):g} to "
                          f"{float(steps.max()):g}); give evenly spaced times, or set "
                          f"time_gap_input=True where the model has it", stacklevel=3)
    T = t.shape[0]
    shapes = [(T, input_dim)] + ([] if n is None else [(n, T, input_dim)])
    check_inputs("u", u, shapes, input_dim)
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


# ------------------------------------------------------------ autoregressive feedback
# what generation feeds back into a recurrence that reads x_{t-1}: f(decoder mean, draw)
FEEDBACKS = {
    "mean": lambda mean, draw: mean,
    "sample": lambda mean, draw: draw,
}


def carried_forward(x: Tensor, mask: Tensor) -> Tensor:
    """(B, T, D): x where observed, else the entry's last observed value at or before
    that step (0 before its first): what a causal recurrence may read for an unseen
    entry without looking ahead."""
    steps = torch.arange(x.shape[1], device=x.device).view(1, -1, 1).expand_as(x)
    last = torch.where(mask, steps, torch.full_like(steps, -1)).cummax(1).values
    carried = x.gather(1, last.clamp(min=0))
    return torch.where(last >= 0, carried, torch.zeros_like(x))


def previous_observations(batch: SequenceBatch, mask: Tensor | None = None) -> Tensor:
    """(B, T, 2D) features of the previous step, [x_{t-1}, mask_{t-1}], zero at the first
    step (no previous observation): what a recurrence reading x_{t-1} sees. An unseen
    entry holds its last seen value (:func:`carried_forward`: causal, so the model stays
    a model of x_t given the past) and 0 in the mask channel; padding only after valid
    steps. ``mask`` (B, T, D) replaces the batch's (e.g. :func:`encoder_mask`)."""
    mask = batch.mask if mask is None else mask
    x = carried_forward(batch.x, mask)
    current = torch.cat([x, mask.to(x.dtype)], -1)                           # (B, T, 2D)
    return torch.cat([torch.zeros_like(current[:, :1]), current[:, :-1]], 1)


def last_observation(batch: SequenceBatch) -> Tensor:
    """(B, 2D) [x, mask] at each sequence's last valid step, unseen entries carried
    forward as in :func:`previous_observations`."""
    x = carried_forward(batch.x, batch.mask)
    return last_valid(torch.cat([x, batch.mask.to(x.dtype)], -1), batch.lengths)


def fed_back(x: Tensor) -> Tensor:
    """(N, 2D) features of a generated, fully observed step x (N, D): [x, 1]."""
    return torch.cat([x, torch.ones_like(x)], -1)


def stack_steps(params_seq: list[tuple[Tensor, ...]]) -> tuple[Tensor, ...]:
    """Per-step observation parameters, each (N, D) -> each (N, steps, D)."""
    return tuple(torch.stack(p, 1) for p in zip(*params_seq, strict=True))


# ------------------------------------------------------------------ sampled paths
def repeat_samples(v: Tensor, K: int) -> Tensor:
    """(B, …) -> (K*B, …): K copies, sample-major (row k*B + b is copy k of sequence b)."""
    return v.expand(K, *v.shape).reshape(K * v.shape[0], *v.shape[1:])


def stepwise_normal(K: int, B: int, T: int, Z: int, like: Tensor) -> Tensor:
    """(K, B, T, Z) standard normal draws made one step at a time, so that the draws of
    step t do not depend on T (padding a batch leaves the draws of its valid steps)."""
    return torch.stack([torch.randn((K, B, Z), dtype=like.dtype, device=like.device)
                        for _ in range(T)], 2)


def latent_terms(z: Tensor, q_mean: Tensor, q_var: Tensor, p_mean: Tensor, p_var: Tensor,
                 valid: Tensor) -> tuple[Tensor, Tensor]:
    """Closed-form KL(q || p) (seed eq. 10) of each latent dimension, summed over valid
    steps, and log p(z) - log q(z) of the drawn latents (the log importance weight's
    latent part), summed over dimensions and valid steps: z, moments (K, B, T, Z), valid
    (B, T) -> kl_dims (K, B, Z) (its sum over Z is the KL term), log_ratio (K, B)."""
    kl = kl_diag_gaussians(q_mean, q_var, p_mean, p_var)                   # (K, B, T, Z)
    log_ratio = (diag_gaussian_log_prob(z, p_mean, p_var)
                 - diag_gaussian_log_prob(z, q_mean, q_var)).sum(-1)
    zero = torch.zeros_like(log_ratio)  # padded steps hold anything, even inf: select
    return (torch.where(valid[..., None], kl, torch.zeros_like(kl)).sum(-2),
            torch.where(valid, log_ratio, zero).sum(-1))


# ----------------------------------------------------------------------- forecasts
def first_steps(batch: SequenceBatch, T: int) -> SequenceBatch:
    """The batch cut to its first T steps (T >= every length)."""
    u = None if batch.u is None else batch.u[:, :T]
    return SequenceBatch(batch.x[:, :T], batch.mask[:, :T], batch.t[:, :T], batch.lengths, u)
