"""Latent SDE (Li et al. 2020, "Scalable gradients for stochastic differential
equations", sec. 5 and 9.9): a continuous-time DVAE whose prior is a neural SDE.

Generative model, on each sequence's own observation times t_0 < ... < t_{L-1}:
    z_0 ~ N(m_0, diag v_0)                               (learned)
    dz = f_p(z) dt + g(z) dW                              (prior SDE, Ito)
    x_k ~ N(mu(z(t_k)), diag s^2)                         (MLP decoder, learned s per dimension)
Inference: a GRU run backwards in time over (x_k * mask_k, mask_k, time gaps) gives
contexts c_k summarising x_{k:L-1}; q(z_0 | x) = N(.) from c_0, and the posterior SDE
    dz = f_q(z, c(t)) dt + g(z) dW,   c(t) = c_{k+1} on [t_k, t_{k+1}),
sees on each observation interval the summary of the observations still ahead (the
information a Doob h-transform of the prior would use). Prior and posterior share the
diagonal diffusion g, so by Girsanov's theorem (dynvae.sde.girsanov)
    KL(q || p) = KL(q(z_0) || p(z_0)) + E_q int_{t_0}^{t_{L-1}} 1/2 |(f_q - f_p) / g|^2 dt,
the first term in closed form, the second integrated by ``sdeint`` as the running cost
of the posterior SDE on each sequence's own grid (exact padding and irregular times).
The networks are autonomous: time enters only through the context, so forecasts and
samples do not depend on the absolute time origin.

The importance-weighted bound uses, per posterior path, log w = log p(x | z) +
log p(z_0) - log q(z_0) + log dP/dQ, with log dP/dQ = -int u . dW - 1/2 int |u|^2 dt
(u = (f_q - f_p) / g) carried as an extra state of the posterior SDE and solved with
Euler-Maruyama, for which it is the exact log-ratio of the discretised path densities.
Both bounds use the same step grid and Brownian increments as training; with the
default Euler solver they bound the same Euler-Maruyama model, with Milstein the IWAE
still scores the Euler-Maruyama one (docs/sde.md, sec. 12).
"""

from __future__ import annotations

import bisect
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor, nn
from torch.nn.functional import linear, softplus

from dynvae.data.batch import SequenceBatch
from dynvae.errors import ConfigError
from dynvae.gaussian import diag_gaussian_log_prob, kl_diag_gaussians
from dynvae.models.base import DVAE, ELBOTerms, Prediction
from dynvae.models.common import (
    DictConfig,
    as_sizes,
    check_choice,
    check_dims,
    check_future,
    check_hide_rate,
    check_positive,
    check_sample_times,
    encoder_mask,
    iwae_bound,
    last_valid,
    mixture_moments,
    observation_features,
    prepare_batch,
)
from dynvae.models.frames import FrameOptions, frame_input, observation_model
from dynvae.nn.diffusion import DiagonalDiffusion
from dynvae.nn.encoders import BackwardContext
from dynvae.nn.mlp import MLP, GaussianHead, trunk
from dynvae.nn.observation import OBSERVATIONS
from dynvae.nn.transition import LearnedGaussianPrior
from dynvae.sde import (
    Adjoint,
    Backprop,
    BrownianPath,
    CheckpointedBlocks,
    Compiled,
    DiagonalSDE,
    EulerMaruyama,
    GirsanovKL,
    GirsanovLogRatio,
    Gradients,
    Milstein,
    Solver,
    sdeint,
)

SOLVERS: dict[str, Callable[[], Solver]] = {
    "euler": EulerMaruyama,
    "milstein": Milstein,
    "euler-compiled": lambda: Compiled(EulerMaruyama()),
}
GRADIENTS = dict.fromkeys(("backprop", "checkpoint", "adjoint"))


@dataclass
class LatentSDEConfig(FrameOptions, DictConfig):
    """Configuration of :class:`LatentSDE`.

    solver: a name in ``SOLVERS`` ("euler", "milstein", "euler-compiled"). dt: largest
    solver step in the data's time unit (None: one step per observation interval).
    time_unit: the model's unit of time, in the data's: every time (and dt) is divided
    by it before it reaches the SDEs, so that drift, diffusion and the Girsanov KL see
    gaps of order one whether the data counts seconds, hours or steps (`dynvae train`
    sets it to the training data's median step, dynvae.train.defaults).
    gradients: how the posterior solve is differentiated: "backprop" (every step kept),
    "checkpoint" (blocks of 64 steps recomputed) or "adjoint" (``dynvae.sde.Adjoint``:
    memory independent of the number of steps, about 2-4x the time of backprop).
    Empty ``emission_hidden`` makes the decoder affine. observation: "gaussian" (one free
    variance per channel) or "bernoulli" (data in [0, 1]; `dynvae train` picks it for
    such data). hide_from_encoder: share of the
    observed entries hidden from the encoder at random while training (still scored;
    ``dynvae.models.common.encoder_mask``). frame_encoder, frame_decoder: "conv" for
    convolutional frame models on image data (dynvae.models.frames).
    """

    model_name = "latent SDE"

    latent_dim: int = 4
    context_dim: int = 16
    encoder_hidden: int = 32
    drift_hidden: tuple[int, ...] = (64, 64)
    diffusion_hidden: int = 16
    emission_hidden: tuple[int, ...] = (32,)
    observation: str = "gaussian"
    solver: str = "euler"
    dt: float | None = None
    gradients: str = "backprop"
    min_var: float = 1e-4
    min_diffusion: float = 1e-3
    n_predict_samples: int = 32
    hide_from_encoder: float = 0.0
    time_unit: float = 1.0

    def __post_init__(self) -> None:
        check_hide_rate(self.hide_from_encoder)
        self.check_frames()
        check_choice("solver", self.solver, SOLVERS)
        check_choice("observation", self.observation, OBSERVATIONS)
        check_positive(time_unit=self.time_unit)
        check_choice("gradients", self.gradients, GRADIENTS)
        self.drift_hidden = as_sizes("drift_hidden", self.drift_hidden)
        self.emission_hidden = as_sizes("emission_hidden", self.emission_hidden)
        check_positive(latent_dim=self.latent_dim, context_dim=self.context_dim,
                       encoder_hidden=self.encoder_hidden,
                       diffusion_hidden=self.diffusion_hidden,
                       n_predict_samples=self.n_predict_samples)
        if self.dt is not None:
            check_positive(dt=self.dt)
        if self.min_var < 0 or self.min_diffusion < 0:
            raise ConfigError(f"min_var and min_diffusion must be >= 0, got {self.min_var}, "
                              f"{self.min_diffusion}")


class GirsanovPaths(NamedTuple):
    """K posterior paths: z (K, B, T, Z) at the observation times; path (K, B) the
    Girsanov KL integrand (or log dP/dQ) from t_0 to each sequence's last time;
    log_ratio0 (K, B) log p(z_0) - log q(z_0); kl0_dims (B, Z) KL(q(z_0) || p(z_0)) of
    each latent dimension; path_dims (K, B, Z) (None for log dP/dQ) the path KL of each
    dimension, which adds up to path."""

    z: Tensor
    path: Tensor
    log_ratio0: Tensor
    kl0_dims: Tensor
    path_dims: Tensor | None = None

    @property
    def kl0(self) -> Tensor:
        """(B,) KL(q(z_0) || p(z_0))."""
        return self.kl0_dims.sum(-1)


class PosteriorStart(NamedTuple):
    """z0 (K * B, Z) draws from q(z_0 | x); times (T,) or (K * B, T) for ``sdeint``; sde
    the posterior SDE; contexts (K * B, T, C) and context_input, the copy of them the SDE
    reads (detached for the adjoint, see :meth:`gradients`); log_ratio0 (K, B); kl0_dims
    (B, Z) KL(q(z_0) || p(z_0)) of each latent dimension."""

    z0: Tensor
    times: Tensor
    sde: GirsanovKL
    contexts: Tensor
    context_input: Tensor
    log_ratio0: Tensor
    kl0_dims: Tensor


def solver_grid(batch: SequenceBatch, pad_step: float) -> Tensor:
    """Times for ``sdeint``: (T,) when all sequences share one full grid, else (B, T)
    with each padded time replaced by t_last + j * pad_step, so every row is strictly
    increasing and the padding comes after everything that is scored."""
    t, lengths, T = batch.t, batch.lengths, batch.n_steps
    if bool((lengths == T).all()) and bool((t == t[:1]).all()):
        return t[0]
    t_last = last_valid(t[..., None], lengths)                               # (B, 1)
    beyond = torch.arange(T, device=t.device) - (lengths[:, None] - 1)       # (B, T)
    return torch.where(batch.valid, t, t_last + beyond.to(t) * pad_step)


def interval_context(times: Tensor, contexts: Tensor) -> Callable[[Tensor], Tensor]:
    """t -> c(t) (R, C): contexts[:, k + 1] on [t_k, t_{k+1}) of each row.

    times: (T,) shared or (R, T) per-row grids; contexts: (R, T, C). ``t`` is 0-dim for
    a shared grid and (R, 1) otherwise, as ``sdeint`` passes it.
    """
    T, C = contexts.shape[1], contexts.shape[2]
    times = times.contiguous()

    def lookup(t: Tensor) -> Tensor:
        if times.dim() == 1:
            k = torch.searchsorted(times, t.reshape(1), right=True).clamp_max(T - 1)
            return contexts.index_select(1, k).squeeze(1)
        k = torch.searchsorted(times, t.contiguous(), right=True).clamp_max(T - 1)  # (R, 1)
        return contexts.gather(1, k.unsqueeze(-1).expand(-1, 1, C)).squeeze(1)
    return lookup


def interval_rows(times: Tensor, table: Tensor) -> Callable[[Tensor], Tensor]:
    """As :func:`interval_context`, for a table read at every step of a backpropagated
    solve: rows are taken from ``table.unbind(1)``, one view per interval, whose
    backward stacks the steps' gradients once, where an index per step would allocate
    and fill a gradient of the whole (R, T, F) table at every step (a cost growing with
    T per step). On per-row grids every row is usually on the same interval (one step
    per interval: step i of each row is its interval i); rows on different intervals
    are gathered as interval_context does."""
    rows, last = table.unbind(1), table.shape[1] - 1
    if times.dim() == 1:
        grid = times.tolist()

        def lookup(t: Tensor) -> Tensor:
            return rows[min(bisect.bisect_right(grid, float(t)), last)]
        return lookup
    times, F = times.contiguous(), table.shape[2]

    def lookup_rows(t: Tensor) -> Tensor:
        k = torch.searchsorted(times, t.contiguous(), right=True).clamp_max(last)  # (R, 1)
        lo, hi = torch.aminmax(k)
        if lo == hi:
            return rows[int(lo)]
        return table.gather(1, k.unsqueeze(-1).expand(-1, 1, F)).squeeze(1)
    return lookup_rows


class FusedPosterior(GirsanovKL):
    """The latent SDE's posterior SDE with its Girsanov cost, its networks run as one.

    Same SDE as ``GirsanovKL(f_q, f_p, g)`` of the separate networks (equal up to the
    rounding of reordered sums), with fewer operations a step: the prior and posterior
    drifts, MLPs of the same hidden sizes, run side by side as one network whose first
    layer reads z through the stacked rows [W_p; W_q,z] with a bias per observation
    interval, [b_p; W_q,c c_k + b_q], computed for every interval before the solve
    (the context c is constant on an interval), and whose deeper layers are
    block-diagonal. The diffusion g that the cost divides by is handed back when the
    solver asks for g at the same state (Euler-Maruyama asks for both), so a step
    evaluates each network once. Used under plain backpropagation (the default); the
    checkpointed, adjoint and compiled solves keep ``GirsanovKL`` of the separate
    networks (they recompute, differentiate or trace the networks step by step).

    posterior_drift, prior_drift: the model's MLPs (Linear and Softplus layers);
    diffusion: its DiagonalDiffusion; times (T,) or (R, T) and contexts (R, T, C) as
    for :func:`interval_context`; per_dimension: as for ``GirsanovKL``.
    """

    def __init__(self, posterior_drift: MLP, prior_drift: MLP, diffusion: DiagonalDiffusion,
                 times: Tensor, contexts: Tensor, per_dimension: bool = False) -> None:
        q_layers = [m for m in posterior_drift.net if isinstance(m, nn.Linear)]
        p_layers = [m for m in prior_drift.net if isinstance(m, nn.Linear)]
        if len(q_layers) != len(p_layers):
            raise ConfigError("the fused posterior needs drifts of the same depth")
        Z = self.latent_dim = prior_drift.in_features
        q0, p0 = q_layers[0], p_layers[0]
        share = linear(contexts, q0.weight[:, Z:], q0.bias)                   # (R, T, H)
        first_bias = torch.cat([p0.bias.expand(*share.shape[:-1], -1), share], -1)
        self.first_weight = torch.cat([p0.weight, q0.weight[:, :Z]]).t()     # (Z, 2H)
        self.first_bias = interval_rows(times, first_bias)
        self.layers = [(torch.block_diag(p.weight, q.weight).t(), torch.cat([p.bias, q.bias]))
                       for p, q in zip(p_layers[1:], q_layers[1:], strict=True)]
        self._last: tuple[Tensor, int, Tensor] | None = None
        super().__init__(lambda t, z: self.drifts(t, z)[1], lambda t, z: prior_drift(z),
                         lambda t, z: diffusion(z),
                         lambda t, z: diffusion.value_and_derivative(z), per_dimension)

    def drifts(self, t: Tensor, z: Tensor) -> tuple[Tensor, Tensor]:
        """(f_p, f_q) at (t, z), each (R, Z)."""
        h = torch.addmm(self.first_bias(t), z, self.first_weight)            # (R, 2H)
        for weight, bias in self.layers:
            h = torch.addmm(bias, softplus(h), weight)
        return h[:, :self.latent_dim], h[:, self.latent_dim:]

    def drift_difference(self, t: Tensor, z: Tensor) -> tuple[Tensor, Tensor]:
        f_p, f_q = self.drifts(t, z)
        g = self._diffusion(t, z)
        self._last = (z, z._version, g)
        return f_q, (f_q - f_p) / g

    def diffusion(self, t: Tensor, z: Tensor) -> Tensor:
        last = self._last
        if last is not None and last[0] is z and last[1] == z._version:
            return last[2]
        return self._diffusion(t, z)


def time_features(batch: SequenceBatch) -> Tensor:
    """(B, T, 2): gaps to the next and from the previous valid time (0 at the ends)."""
    valid = batch.valid
    t = torch.where(valid, batch.t, torch.zeros_like(batch.t))
    both = valid[:, 1:] & valid[:, :-1]
    gap = torch.where(both, t[:, 1:] - t[:, :-1], torch.zeros_like(t[:, 1:]))  # (B, T-1)
    zero = torch.zeros_like(t[:, :1])
    return torch.stack([torch.cat([gap, zero], 1), torch.cat([zero, gap], 1)], -1)


class LatentSDE(DVAE):
    """The latent SDE of Li et al. (2020) with missing values and irregular times.

    Args: config: :class:`LatentSDEConfig`. data_dim: D. input_dim: must be 0.
    """

    Config = LatentSDEConfig
    continuous_time = True
    takes_inputs = False

    def __init__(self, config: LatentSDEConfig, data_dim: int, input_dim: int = 0) -> None:
        super().__init__()
        check_dims(data_dim, input_dim)
        if input_dim != 0:
            raise ConfigError(f"the latent SDE takes no control inputs, got input_dim="
                              f"{input_dim}")
        c = self.config = config
        Z, C, D = c.latent_dim, c.context_dim, data_dim
        self.data_dim, self.input_dim = D, 0
        self.frame_input, width = frame_input(c, D, 0)        # [x * mask, mask] -> encoder
        self.encoder = BackwardContext(width + 2, c.encoder_hidden, C)
        self.initial_posterior = GaussianHead(C, Z, min_var=c.min_var)
        self.initial_prior = LearnedGaussianPrior(Z)
        self.posterior_drift = MLP(Z + C, c.drift_hidden, Z, activation=nn.Softplus)
        self.prior_drift = MLP(Z, c.drift_hidden, Z, activation=nn.Softplus)
        self.diffusion = DiagonalDiffusion(Z, c.diffusion_hidden, c.min_diffusion)
        self.emission_trunk, width = trunk(Z, c.emission_hidden)
        self.observation = observation_model(c, width, D,
                                             free_variance=c.observation == "gaussian")
        self.solver = SOLVERS[c.solver]()

    # ------------------------------------------------------------ building blocks
    def _prepare(self, batch: SequenceBatch) -> SequenceBatch:
        batch = prepare_batch(batch, self.data_dim, 0, next(self.observation.parameters()))
        self.observation.check_data(batch.x, batch.mask)
        return batch

    def model_time(self, t: Tensor) -> Tensor:
        """Times in the model's unit (``config.time_unit``)."""
        return t / self.config.time_unit

    @property
    def solver_dt(self) -> float | None:
        """``config.dt`` in the model's unit of time."""
        dt = self.config.dt
        return None if dt is None else dt / self.config.time_unit

    def emission(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and variance of p(x | z): z (…, Z) -> each (…, D)."""
        return self.observation(self.emission_trunk(z))

    def prior_sde(self) -> DiagonalSDE:
        """dz = f_p(z) dt + g(z) dW."""
        return DiagonalSDE(lambda t, z: self.prior_drift(z), lambda t, z: self.diffusion(z),
                           lambda t, z: self.diffusion.value_and_derivative(z))

    def posterior_sde(self, times: Tensor, contexts: Tensor) -> GirsanovKL:
        """dz = f_q(z, c(t)) dt + g(z) dW with the Girsanov running cost of each latent
        dimension (R, Z); times (T,) or (R, T), contexts (R, T, C)."""
        if self.config.gradients == "backprop" and not isinstance(self.solver, Compiled):
            return FusedPosterior(self.posterior_drift, self.prior_drift, self.diffusion,
                                  times, contexts, per_dimension=True)
        lookup = interval_context(times, contexts)
        return GirsanovKL(lambda t, z: self.posterior_drift(torch.cat([z, lookup(t)], -1)),
                          lambda t, z: self.prior_drift(z), lambda t, z: self.diffusion(z),
                          lambda t, z: self.diffusion.value_and_derivative(z),
                          per_dimension=True)

    def posterior_start(self, batch: SequenceBatch, n_samples: int,
                        z0_noise: Tensor | None = None) -> PosteriorStart:
        """Encode a prepared batch and draw K = n_samples initial states from q(z_0 | x).
        ``z0_noise`` (K, B, Z) fixes the standard normal draws."""
        K, B, Z = n_samples, batch.batch_size, self.config.latent_dim
        seen = encoder_mask(batch, self.config.hide_from_encoder, self.training)
        features = torch.cat([self.frame_input(observation_features(batch, seen, "time")),
                              self.model_time(time_features(batch))], -1)
        ctx = self.encoder(features, batch.lengths)                           # (B, T, C)
        q_mean, q_var = self.initial_posterior(ctx[:, 0])                     # (B, Z)
        p_mean, p_var = self.initial_prior((B,), q_mean)
        eps = torch.randn((K, B, Z), dtype=q_mean.dtype, device=q_mean.device) \
            if z0_noise is None else z0_noise.to(q_mean)
        z0 = q_mean + q_var.sqrt() * eps                                      # (K, B, Z)
        log_ratio0 = (diag_gaussian_log_prob(z0, p_mean, p_var)
                      - diag_gaussian_log_prob(z0, q_mean, q_var)).sum(-1)    # (K, B)
        times = self.model_time(solver_grid(batch, self.config.dt or self.config.time_unit))
        times = times if times.dim() == 1 else times.repeat(K, 1)             # (K * B, T)
        contexts = ctx.repeat(K, 1, 1)                                       # (K * B, T, C)
        read = contexts
        if self.config.gradients == "adjoint":
            read = contexts.detach().requires_grad_(contexts.requires_grad)
        return PosteriorStart(z0.reshape(K * B, Z), times, self.posterior_sde(times, read),
                              contexts, read, log_ratio0,
                              kl_diag_gaussians(q_mean, q_var, p_mean, p_var))

    def gradients(self, start: PosteriorStart) -> Gradients:
        """The configured way of differentiating a posterior solve. The adjoint is told
        every tensor the posterior SDE reads (its networks' weights and the detached
        contexts), and hands the contexts' gradient on to the encoder's output, so that
        no step of its reverse pass walks the encoder's graph."""
        if self.config.gradients == "adjoint":
            weights = [p for net in (self.posterior_drift, self.prior_drift, self.diffusion)
                       for p in net.parameters()]
            return Adjoint([*weights, start.context_input], [*weights, start.contexts])
        if self.config.gradients == "checkpoint":
            return CheckpointedBlocks()
        return Backprop()

    def posterior_paths(self, batch: SequenceBatch, n_samples: int, *,
                        bm: BrownianPath | None = None, z0_noise: Tensor | None = None
                        ) -> GirsanovPaths:
        """K = n_samples posterior paths of a prepared batch, solved with the configured
        solver; ``path`` is the Girsanov KL integrand. ``bm`` (K * B, Z) and ``z0_noise``
        (K, B, Z) fix the noise (path index k * B + b)."""
        start = self.posterior_start(batch, n_samples, z0_noise)
        sol = sdeint(start.sde, start.z0, start.times, self.solver, self.solver_dt, bm,
                     gradients=self.gradients(start))
        return self._at_last_times(batch, start, sol.z, sol.running_cost)

    def log_ratio_paths(self, batch: SequenceBatch, n_samples: int, *,
                        bm: BrownianPath | None = None, z0_noise: Tensor | None = None
                        ) -> GirsanovPaths:
        """As :meth:`posterior_paths`, with ``path`` = log dP/dQ: the state [z, l] of
        ``GirsanovLogRatio`` solved with Euler-Maruyama from l = 0."""
        start = self.posterior_start(batch, n_samples, z0_noise)
        s0 = torch.cat([start.z0, start.z0.new_zeros(start.z0.shape[0], 1)], -1)
        s = sdeint(GirsanovLogRatio(start.sde), s0, start.times, EulerMaruyama(),
                   self.solver_dt, bm, gradients=self.gradients(start)).z  # (KB, T, Z + 1)
        return self._at_last_times(batch, start, s[..., :-1], s[..., -1])

    def _at_last_times(self, batch: SequenceBatch, start: PosteriorStart, z: Tensor,
                       path: Tensor) -> GirsanovPaths:
        """Reshape z (K * B, T, Z) and read path (K * B, T), or per latent dimension
        (K * B, T, Z), at each last valid time."""
        K = start.log_ratio0.shape[0]
        B, T = batch.x.shape[:2]
        z = z.reshape(K, B, T, -1)
        dims = path.reshape(K, B, T, -1)                                      # (K, B, T, W)
        last = (batch.lengths - 1).to(z.device).view(1, B, 1, 1).expand(K, B, 1, dims.shape[-1])
        dims = dims.gather(2, last).squeeze(2)                                # (K, B, W)
        per_dim = path.dim() == 3
        return GirsanovPaths(z, dims.sum(-1) if per_dim else dims[..., 0], start.log_ratio0,
                             start.kl0_dims, dims if per_dim else None)

    def emission_log_prob(self, batch: SequenceBatch, z: Tensor) -> Tensor:
        """(K, B) log p(x | z) of the scored entries along paths z (K, B, T, Z)."""
        lp = self.observation.log_prob(batch.x, self.emission(z), self.scored_mask(batch))
        return lp.sum((-1, -2))

    # ------------------------------------------------------------------ contract
    def elbo(self, batch: SequenceBatch, n_samples: int = 1, *,
             bm: BrownianPath | None = None, z0_noise: Tensor | None = None) -> ELBOTerms:
        """E_q log p(x | z) - KL(q(z_0) || p(z_0)) - E_q int 1/2 |u|^2 dt, averaged over
        ``n_samples`` paths (``bm``, ``z0_noise``: see :meth:`posterior_paths`)."""
        check_positive(n_samples=n_samples)
        batch = self._prepare(batch)
        paths = self.posterior_paths(batch, n_samples, bm=bm, z0_noise=z0_noise)
        log_lik = self.emission_log_prob(batch, paths.z)
        n_obs = batch.n_observed().to(log_lik)
        if paths.path_dims is None:       # a posterior SDE whose cost is not split
            return ELBOTerms(log_lik.mean(0), paths.kl0 + paths.path.mean(0), n_obs)
        kl_dims = paths.kl0_dims + paths.path_dims.mean(0)                   # (B, Z)
        return ELBOTerms(log_lik.mean(0), kl_dims.sum(-1), n_obs, kl_dims)

    def log_weights(self, batch: SequenceBatch, k: int, *, bm: BrownianPath | None = None,
                    z0_noise: Tensor | None = None) -> Tensor:
        """(k, B) log p(x, z) / q(z | x) of k posterior paths (Euler-Maruyama)."""
        batch = self._prepare(batch)
        paths = self.log_ratio_paths(batch, k, bm=bm, z0_noise=z0_noise)
        return self.emission_log_prob(batch, paths.z) + paths.log_ratio0 + paths.path

    @torch.no_grad()
    def log_likelihood_bound(self, batch: SequenceBatch, k: int) -> Tensor:
        """IWAE bound log (1/k) sum_k w_k with the path weights of :meth:`log_weights`, (B,)."""
        return iwae_bound(lambda n: self.log_weights(batch, n), k)

    @torch.no_grad()
    def reconstruct(self, batch: SequenceBatch) -> Prediction:
        """Posterior predictive mean and std of every entry, Monte Carlo over q."""
        batch = self._prepare(batch)
        paths = self.posterior_paths(batch, self.config.n_predict_samples)
        mean, var = self.observation.moments(self.emission(paths.z))
        return Prediction(batch.t, *mixture_moments(mean, var))

    @torch.no_grad()
    def forecast(self, batch: SequenceBatch, t_future: Tensor,
                 u_future: Tensor | None = None) -> Prediction:
        """Predictive mean/std at ``t_future`` (B, H): posterior draws of z at each
        sequence's last time, continued with the prior SDE on that sequence's grid.
        The model takes no inputs: ``u_future`` must be None."""
        batch = self._prepare(batch)
        check_future(batch, t_future, u_future, 0)
        K, (B, H) = self.config.n_predict_samples, t_future.shape
        paths = self.posterior_paths(batch, K)
        z_last = last_valid(paths.z, batch.lengths).reshape(K * B, -1)       # (K * B, Z)
        t_last = last_valid(batch.t[..., None], batch.lengths)               # (B, 1)
        grid = torch.cat([t_last, t_future.to(t_last)], 1).repeat(K, 1)      # (K * B, H + 1)
        z = sdeint(self.prior_sde(), z_last, self.model_time(grid), self.solver,
                   self.solver_dt).z
        mean, var = self.observation.moments(self.emission(z[:, 1:].reshape(K, B, H, -1)))
        return Prediction(t_future, *mixture_moments(mean, var))

    @torch.no_grad()
    def sample(self, n: int, t: Tensor, u: Tensor | None = None) -> Tensor:
        """(n, T, D) draws of x at the times ``t`` (T,): z_0 ~ p(z_0), then the prior SDE.
        The model takes no inputs: ``u`` must be None."""
        check_sample_times(t, u, 0, n)
        z = self.sample_latents(n, t)
        return self.observation.sample(self.emission(z))

    def sample_latents(self, n: int, t: Tensor) -> Tensor:
        """(n, T, Z) prior paths at the times ``t`` (T,)."""
        like = next(self.observation.parameters())
        mean, var = self.initial_prior((n,), like)
        z0 = mean + var.sqrt() * torch.randn_like(mean)                       # (n, Z)
        return sdeint(self.prior_sde(), z0, self.model_time(t.to(like)), self.solver,
                      self.solver_dt).z
