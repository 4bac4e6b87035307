"""Latent ODE (Rubanova, Chen & Duvenaud 2019, "Latent ODEs for irregularly-sampled time
series"; Chen et al. 2018, "Neural ordinary differential equations", sec. 5): a
continuous-time DVAE whose only latent randomness is the initial state.

Generative model, on each sequence's own observation times t_0 < ... < t_{L-1} (seed
eq. 11 with a deterministic latent transition, so p(z_{1:T}) = p(z_0)):
    z_0 ~ p(z_0) = N(0, I)
    z(t) = z_0 + int_{t_0}^{t} f(z(s)) ds               (autonomous neural ODE)
    x_k ~ p(x_k | z(t_k))                                 (Gaussian or Bernoulli decoder)
    p(x, z_0) = p(z_0) prod_k p(x_k | z(t_k))
Inference (seed eq. 12 with q(z | x) = q(z_0 | x), the path following from z_0):
    q(z_0 | x) = N(mu(h_0), diag sigma^2(h_0)),  h_0 = ODE-RNN run backwards over the
    observations [x_k * m_k, m_k] on the sequence's own times (dynvae.nn.ode_rnn).
ELBO (seed eq. 13): E_q sum_k log p(x_k | z(t_k)) over the observed entries minus the
closed-form KL(q(z_0 | x) || p(z_0)); the importance weights are
log p(x | z) + log p(z_0) - log q(z_0 | x). The ODE is solved by dynvae.ode on each
sequence's own grid (padding beyond ``lengths`` takes no part), with the adaptive
Dormand-Prince pair by default; forecasts solve it on to any future time.

Multiple shooting (``segment_steps`` = M; after Iakovlev et al. 2023, "Latent neural
ODEs with sparse Bayesian multiple shooting", with a learned continuity variance): the
path restarts every M observation times, at tau_k = t_{kM}, from a state s_k of its own,
    s_0 ~ N(0, I),   s_k ~ N(z_{k-1}(tau_k), diag sigma_J^2)   (a jump where segment k starts)
    z_k(t) = s_k + int_{tau_k}^{t} f(z_k(s)) ds   for t in [tau_k, tau_{k+1}),
so p(z) is a Markov chain of ODE segments: sigma_J -> 0 is the one-path model, and one
path no longer has to carry a whole sequence (motion recordings of 100 steps) from
its first state. q(s | x) = prod_k N(mu(h_{kM}), diag sigma^2(h_{kM})) reads the
backward ODE-RNN's state at each segment's first time (it has read x from there to
the end); the ELBO's KL is KL(q(s_0) || N(0, I)) plus, for each later segment, the
closed-form KL(q(s_k) || N(z_{k-1}(tau_k), sigma_J^2)) at the drawn arrival z_{k-1}(tau_k)
(an unbiased estimate of the expected KL); the IWAE weights are log p(x | z) +
log p(s) - log q(s | x). The segments of all sequences and draws are solved as one batch
of short per-row grids. Forecasts and samples continue the chain: the ODE between
times, and a jump N(0, sigma_J^2) every M median steps in time: forecasts from the last
segment's start (on the sequence's median step), samples from their first time (on the
median step of the times asked for). On a regular grid these are the times that start a
segment; fixed in time, they make the prediction at a time independent of which other
times are asked for. While training (``random_phase``), the segments of a batch start at
0, p, p + M, ... for a phase p drawn in [0, M): each is an ELBO of the same kind for the
chain cut at other times, and it teaches the encoder the short last segments that a
sequence's end (a forecast's history) leaves, which training windows of one length
would never show it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import ClassVar

import torch
from torch import Tensor, nn
from torch.nn.functional import softplus

from dynvae.data.batch import SequenceBatch
from dynvae.errors import ConfigError, NumericalError
from dynvae.gaussian import diag_gaussian_log_prob, kl_diag_gaussians
from dynvae.models.base import DVAE, ELBOTerms, Prediction
from dynvae.models.common import (
    DictConfig,
    as_sizes,
    check_choice,
    check_dims,
    check_future,
    check_hide_rate,
    check_observation,
    check_positive,
    check_sample_times,
    encoder_mask,
    iwae_bound,
    median_steps,
    mixture_moments,
    observation_features,
    prepare_batch,
    resolved_free_variance,
)
from dynvae.models.frames import FrameOptions, frame_input, observation_model
from dynvae.nn.mlp import MLP, FreeVariance, GaussianHead, trunk
from dynvae.nn.observation import OBSERVATIONS
from dynvae.nn.ode_rnn import ODERNNEncoder
from dynvae.ode import RK4, BogackiShampine, DormandPrince, Euler, Midpoint, odeint

ADAPTIVE_SOLVERS = {"dopri5": DormandPrince, "bosh3": BogackiShampine}
FIXED_SOLVERS = {"rk4": RK4, "midpoint": Midpoint, "euler": Euler}
SOLVERS = {**ADAPTIVE_SOLVERS, **FIXED_SOLVERS}
# draws of the ELBO per refinement step at prediction time (LatentODEConfig.refine_steps)
REFINE_SAMPLES = 4


# `dynvae train`'s time_unit: the data's unit while a training example spans at most
# MAX_EXAMPLE_UNITS of it (and at least 1); else one that makes it EXAMPLE_UNITS long.
# Measured on 2026-12-03, 30 or 45 s of training: co2 with dates (days; a training
# window spans 448 of them) imputed at MSE 296 in days, 1.001 with 100 units to a
# window, 0.844 with 64, 0.459 with 10; seattle-temps (hours, 63 to a window) at 0.2055
# in hours and 0.2334 with 10 units to a window (forecast MSE 9.891 against 41.07).
MAX_EXAMPLE_UNITS = 100.0
EXAMPLE_UNITS = 10.0


@dataclass
class LatentODEConfig(FrameOptions, DictConfig):
    """Configuration of :class:`LatentODE`.

    solver: "dopri5" or "bosh3" (adaptive, with ``rtol``/``atol``), or "rk4", "midpoint",
    "euler" (fixed steps of at most ``dt``; None: one per observation interval).
    encoder_solver / encoder_dt: the same for the ODE-RNN encoder (fixed steps only).
    checkpoint_every: solver steps per gradient checkpoint (None: plain backpropagation).
    observation: "gaussian" or "bernoulli"; free_emission_variance: for the Gaussian, True
    (the default, None) learns one variance per channel, False makes it a function of z.
    Empty hidden sizes make maps affine. frame_encoder, frame_decoder: "conv" for
    convolutional frame models on image data: the ODE-RNN reads the conv encoder's
    features of each frame, the emission is the conv decoder (dynvae.models.frames).
    segment_steps: observation times per segment: the latent path restarts at each
    segment's first time from a state drawn around where the previous segment's ODE
    arrives (multiple shooting); None: one path from z_0, the paper's model, which
    ``dynvae train`` trains on windows that grow to whole sequences over the first
    1,000 steps (TrainConfig.horizon_warmup_steps, dynvae.train.defaults).
    random_phase: while training, the segments start at a random phase drawn per batch
    (the first holds 1 to segment_steps observations), so that the model also learns
    segments cut short by a sequence's end, as a forecast's history ends; evaluation,
    imputation and forecasts use the model's own segments, from the first time.
    jump_std: sigma_J, the std of the jump where a segment starts (None: learned, one
    per latent dimension, as a free variance).
    hide_from_encoder: share of the observed entries hidden from the ODE-RNN while
    training (still scored; ``dynvae.models.common.encoder_mask``).
    refine_steps: before a forecast, Adam steps on each sequence's own q (with segments:
    the last segment's), the encoder's output as the start, with the networks fixed
    (semi-amortised inference: the ELBO of that sequence alone, over ``REFINE_SAMPLES``
    draws); 0: the encoder's q as it is. Imputation and latent plots use the encoder's
    q. refine_lr: their step size.
    time_unit: the model's unit of time, in the data's: every time (and dt, encoder_dt)
    is divided by it, so that the ODEs integrate over spans of the same order whatever
    unit the times come in (dates read as days, seconds, years). `dynvae train` keeps
    the data's unit where a training example spans 1 to 100 of it and otherwise makes
    it span 10 (``sized_for``, ``MAX_EXAMPLE_UNITS``): on co2 with 40% of the weeks
    dropped and times read from dates (days), 30 s of training imputed at MSE 296 with
    unit 1 (the training mean's: 266) and at 0.459 with the rule's 44.1 days.
    """

    model_name = "latent ODE"
    # a run saved before segments existed holds the one-path model (dynvae.train.schema)
    # and predicted with the encoder's q as it is
    SAVED_BEFORE: ClassVar[dict] = {"segment_steps": None, "refine_steps": 0,
                                    "time_unit": 1.0}

    latent_dim: int = 8
    encoder_hidden: int = 32
    encoder_field_hidden: tuple[int, ...] = (32,)
    field_hidden: tuple[int, ...] = (64, 64)
    emission_hidden: tuple[int, ...] = (32,)
    observation: str = "gaussian"
    free_emission_variance: bool | None = None
    min_var: float = 1e-4
    solver: str = "dopri5"
    rtol: float = 1e-3
    atol: float = 1e-4
    dt: float | None = None
    encoder_solver: str = "euler"
    encoder_dt: float | None = None
    checkpoint_every: int | None = None
    n_predict_samples: int = 32
    segment_steps: int | None = 5
    random_phase: bool = True
    jump_std: float | None = None
    hide_from_encoder: float = 0.0
    refine_steps: int = 50
    refine_lr: float = 0.05
    time_unit: float = 1.0

    def sized_for(self, size) -> dict:
        """The fields the defaults' rule sets from the data (``dynvae.train.defaults``,
        ``size`` a DataSize): time_unit 1 (the data's own unit) where a training example
        (a sequence, or a window of train_window steps) spans between 1 and
        MAX_EXAMPLE_UNITS of it, as on every built-in dataset (1.2 to 99 units); else a
        tenth of that span, so that the ODEs integrate over about ten units."""
        span = size.example_span(0 if self.horizon_warmup else size.train_window)
        if 1.0 <= span <= MAX_EXAMPLE_UNITS:
            return {"time_unit": 1.0}
        return {"time_unit": float(f"{span / EXAMPLE_UNITS:.6g}")}

    @property
    def horizon_warmup(self) -> bool:
        """Whether `dynvae train` grows its training windows (dynvae.train.defaults): for
        one path from one initial state; segments restart the path, so they train on
        the windows every other model gets."""
        return self.segment_steps is None

    def __post_init__(self) -> None:
        check_choice("solver", self.solver, SOLVERS)
        check_choice("encoder_solver", self.encoder_solver, FIXED_SOLVERS)
        check_choice("observation", self.observation, OBSERVATIONS)
        self.check_frames()
        for name in ("encoder_field_hidden", "field_hidden", "emission_hidden"):
            setattr(self, name, as_sizes(name, getattr(self, name)))
        check_positive(latent_dim=self.latent_dim, encoder_hidden=self.encoder_hidden,
                       n_predict_samples=self.n_predict_samples)
        check_observation(self.observation, bool(self.free_emission_variance), self.min_var)
        if self.solver in ADAPTIVE_SOLVERS:
            if self.dt is not None:
                raise ConfigError(f"solver {self.solver!r} chooses its own steps: dt must be "
                                  f"None, got {self.dt}")
            self.adaptive_solver()                      # checks rtol and atol
        for name in ("dt", "encoder_dt"):
            if getattr(self, name) is not None:
                check_positive(**{name: getattr(self, name)})
        if self.checkpoint_every is not None:
            check_positive(checkpoint_every=self.checkpoint_every)
        if self.segment_steps is not None:
            check_positive(segment_steps=self.segment_steps)
        if self.jump_std is not None:
            if self.segment_steps is None:
                raise ConfigError(f"jump_std={self.jump_std} needs segment_steps (the jumps "
                                  f"happen where segments start)")
            check_positive(jump_std=self.jump_std)
        check_hide_rate(self.hide_from_encoder)
        if isinstance(self.refine_steps, bool) or not (
                isinstance(self.refine_steps, int) and self.refine_steps >= 0):
            raise ConfigError(f"refine_steps must be an integer >= 0, got "
                              f"{self.refine_steps!r}")
        check_positive(refine_lr=self.refine_lr, time_unit=self.time_unit)

    def adaptive_solver(self):
        """The adaptive solver named by ``solver`` with the tolerances (ConfigError if bad)."""
        return ADAPTIVE_SOLVERS[self.solver](rtol=self.rtol, atol=self.atol)

    def ode_solver(self):
        """The solver object of the generative ODE."""
        return self.adaptive_solver() if self.solver in ADAPTIVE_SOLVERS \
            else FIXED_SOLVERS[self.solver]()


class LatentODE(DVAE):
    """The latent ODE with an ODE-RNN encoder, on irregular times with missing values.

    Args: config: :class:`LatentODEConfig`. data_dim: D. input_dim: must be 0.
    """

    Config = LatentODEConfig
    continuous_time = True
    takes_inputs = False

    def __init__(self, config: LatentODEConfig, data_dim: int, input_dim: int = 0) -> None:
        super().__init__()
        check_dims(data_dim, input_dim)
        if input_dim != 0:
            raise ConfigError(f"the latent ODE takes no control inputs, got input_dim="
                              f"{input_dim}")
        c = self.config = config
        Z, D = c.latent_dim, data_dim
        self.data_dim, self.input_dim = D, 0
        self.frame_input, width = frame_input(c, D, 0)      # [x * mask, mask] -> ODE-RNN
        self.encoder = ODERNNEncoder(
            width, c.encoder_hidden, c.encoder_field_hidden, FIXED_SOLVERS[c.encoder_solver](),
            None if c.encoder_dt is None else c.encoder_dt / c.time_unit)
        self.initial_posterior = GaussianHead(c.encoder_hidden, Z, min_var=c.min_var)
        self.field = MLP(Z, c.field_hidden, Z, activation=nn.Tanh)
        self.emission_trunk, width = trunk(Z, c.emission_hidden)
        free = resolved_free_variance(c.observation, c.free_emission_variance)
        self.observation = observation_model(c, width, D, free)
        self.solver = c.ode_solver()
        # multiple shooting: the jumps' learned variance (softplus(raw) + min_var)
        self.jump_variance = FreeVariance(Z) if c.segment_steps is not None \
            and c.jump_std is None else None

    # ------------------------------------------------------------ building blocks
    @property
    def like(self) -> Tensor:
        return self.initial_posterior.mean.weight

    def _checked(self, batch: SequenceBatch) -> SequenceBatch:
        """The batch checked and in the model's dtype, its times in the data's unit."""
        batch = prepare_batch(batch, self.data_dim, 0, self.like)
        self.observation.check_data(batch.x, batch.mask)
        return batch

    def _prepare(self, batch: SequenceBatch) -> SequenceBatch:
        """The batch checked, in the model's dtype, its times in the model's unit."""
        return self._in_model_time(self._checked(batch))

    def _in_model_time(self, batch: SequenceBatch) -> SequenceBatch:
        return replace(batch, t=self.model_time(batch.t))

    def model_time(self, t: Tensor) -> Tensor:
        """Times in the model's unit (``config.time_unit``)."""
        return t / self.config.time_unit if self.config.time_unit != 1 else t

    def emission(self, z: Tensor) -> tuple[Tensor, ...]:
        """Parameters of p(x | z): z (…, Z) -> each (…, D)."""
        return self.observation(self.emission_trunk(z))

    def solve(self, z0: Tensor, t: Tensor, lengths: Tensor | None = None) -> Tensor:
        """z(t) from z0 (R, Z) at t[..., 0]: t (T,) or (R, T), with each row's number of
        valid times ``lengths`` (R,) (None: all) -> (R, T, Z)."""
        dt = None if self.config.dt is None else self.config.dt / self.config.time_unit
        return odeint(lambda s, z: self.field(z), z0, t, self.solver, dt,
                      self.config.checkpoint_every, lengths)

    def encoder_features(self, batch: SequenceBatch) -> Tensor:
        """(B, T, F) what the ODE-RNN reads: the entries it sees (while training, all but
        ``hide_from_encoder`` of them), unseen ones filled by linear interpolation in time."""
        seen = encoder_mask(batch, self.config.hide_from_encoder, self.training)
        return self.frame_input(observation_features(batch, seen, fill="time"))

    def initial_posterior_of(self, batch: SequenceBatch) -> tuple[Tensor, Tensor]:
        """Mean and variance of q(z_0 | x) of a prepared batch, (B, Z) each."""
        h0 = self.encoder(self.encoder_features(batch), batch.t, batch.lengths)
        return self.initial_posterior(h0)

    # ------------------------------------------------------------ multiple shooting
    @property
    def segmented(self) -> bool:
        return self.config.segment_steps is not None

    def jump_var(self) -> Tensor:
        """(Z,) variance of a jump where a segment starts."""
        c = self.config
        if self.jump_variance is None:
            return self.like.new_full((c.latent_dim,), c.jump_std ** 2)
        return softplus(self.jump_variance.raw) + c.min_var

    def draw_phase(self) -> int:
        """0 (the model's segments), or while training with ``random_phase`` a phase in
        [0, M) drawn from torch's generator."""
        if not (self.training and self.config.random_phase):
            return 0
        return int(torch.randint(self.config.segment_steps, ()))

    def segment_starts(self, batch: SequenceBatch, phase: int = 0) -> tuple[Tensor, Tensor]:
        """Index of each segment's first observation (S,): 0, then every M-th from
        ``phase`` (0: 0, M, 2M, ...; p > 0: 0, p, p + M, ...) below the longest length;
        and whether it lies within each sequence (B, S)."""
        M = self.config.segment_steps
        lengths = batch.lengths.to(batch.t.device)
        longest = int(lengths.max())
        first = phase or M
        later = torch.arange(first, max(first, longest), M, device=lengths.device)
        starts = torch.cat([later.new_zeros(1), later])
        return starts, starts[None] < lengths[:, None]

    def segment_posterior_of(self, batch: SequenceBatch, phase: int = 0
                             ) -> tuple[Tensor, Tensor]:
        """Mean and variance of q(s_k | x), (B, S, Z) each: the head reads the ODE-RNN's
        state at each segment's first time, which has read x from there to the end."""
        h = self.encoder(self.encoder_features(batch), batch.t, batch.lengths,
                         every_step=True)                                     # (B, T, H)
        return self.initial_posterior(h[:, self.segment_starts(batch, phase)[0]])

    def segment_paths(self, batch: SequenceBatch, n_samples: int,
                      noise: Tensor | None = None, phase: int = 0,
                      posterior: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, ...]:
        """K = n_samples draws of the segments' states s ~ q(s | x) (K, B, S, Z) of a
        prepared batch, the latent path at the observation times (K, B, T, Z), each
        segment's arrival at the next one's first time (K, B, S - 1, Z), and q's mean and
        variance (B, S, Z). ``noise`` (K, B, S, Z) fixes the standard normal draws;
        ``phase``: see :meth:`segment_starts`; ``posterior``: q's mean and variance in
        place of the encoder's."""
        q_mean, q_var = self.segment_posterior_of(batch, phase) if posterior is None \
            else posterior
        K, (B, S, Z), M, T = n_samples, q_mean.shape, self.config.segment_steps, batch.n_steps
        eps = torch.randn((K, B, S, Z), dtype=q_mean.dtype, device=q_mean.device) \
            if noise is None else noise.to(q_mean)
        s = q_mean + q_var.sqrt() * eps                                       # (K, B, S, Z)
        starts, _ = self.segment_starts(batch, phase)
        lengths = batch.lengths.to(starts.device)
        sizes = torch.diff(starts, append=lengths.max().reshape(1))          # (S,), <= M
        # segment k solves over its observation times and the next segment's first one
        idx = starts[:, None] + torch.arange(M + 1, device=starts.device)     # (S, M + 1)
        idx = torch.minimum(idx[None], lengths[:, None, None] - 1)            # (B, S, M + 1)
        grid = batch.t.gather(1, idx.reshape(B, -1)).reshape(B, S, M + 1)
        n = torch.minimum(sizes[None] + 1, lengths[:, None] - starts[None]).clamp(1, M + 1)
        z = self.solve(s.reshape(K * B * S, Z), grid.repeat(K, 1, 1).reshape(K * B * S, -1),
                       n.repeat(K, 1).reshape(-1)).reshape(K, B, S, M + 1, Z)
        step = torch.arange(T, device=starts.device)
        seg = (torch.searchsorted(starts, step, right=True) - 1).clamp(min=0)   # (T,)
        path = z[:, :, seg, (step - starts[seg]).clamp(max=M)]    # (K, B, T, Z); padding repeats
        arrive = z[:, :, torch.arange(S - 1, device=starts.device), sizes[:-1]]
        return s, path, arrive, q_mean, q_var

    def segment_kl(self, q_mean: Tensor, q_var: Tensor, arrive: Tensor, valid: Tensor
                   ) -> Tensor:
        """(B, Z) KL of q(s | x) from the prior, per latent dimension: KL(q(s_0) || N(0, I))
        plus, for every later segment within the sequence, KL(q(s_k) || N(arrival of
        segment k-1, jump variance)) averaged over the drawn arrivals (K, B, S - 1, Z)."""
        first = kl_diag_gaussians(q_mean[:, 0], q_var[:, 0], torch.zeros_like(q_mean[:, 0]),
                                  torch.ones_like(q_var[:, 0]))
        jumps = kl_diag_gaussians(q_mean[None, :, 1:], q_var[None, :, 1:], arrive,
                                  self.jump_var().expand_as(arrive)).mean(0)   # (B, S-1, Z)
        return first + torch.where(valid[:, 1:, None], jumps, torch.zeros_like(jumps)).sum(1)

    def segment_log_ratio(self, s: Tensor, arrive: Tensor, q_mean: Tensor, q_var: Tensor,
                          valid: Tensor) -> Tensor:
        """(K, B) log p(s) - log q(s | x) of drawn states s (K, B, S, Z)."""
        prior = diag_gaussian_log_prob(s[:, :, 0], torch.zeros_like(s[:, :, 0]),
                                       torch.ones_like(s[:, :, 0])).sum(-1)
        jumps = diag_gaussian_log_prob(s[:, :, 1:], arrive,
                                       self.jump_var().expand_as(arrive)).sum(-1)
        log_q = diag_gaussian_log_prob(s, q_mean.expand_as(s), q_var.expand_as(s)).sum(-1)
        zero = torch.zeros_like(log_q)
        return (prior + torch.where(valid[:, 1:], jumps, zero[..., 1:]).sum(-1)
                - torch.where(valid, log_q, zero).sum(-1))

    def roll_out(self, z: Tensor, t_from: Tensor, times: Tensor, next_jump: Tensor,
                 period: Tensor) -> Tensor:
        """The generative path on from states z (R, Z) at t_from (R,) to the times (R, H):
        the ODE, and a jump N(0, jump variance) at the times next_jump, next_jump +
        period, ... (R,) each. A jump within 1e-6 periods of an asked time comes before
        it (on a regular grid the jumps fall on the times that start a segment). The
        jumps are fixed in time, so the prediction at a time does not depend on which
        other times are asked for -> (R, H, Z)."""
        std, out = self.jump_var().sqrt(), []
        tol = 1e-6 * period
        for j in range(times.shape[1]):
            target = times[:, j]
            while True:
                jump = next_jump <= target + tol                               # (R,)
                stop = torch.where(jump, torch.minimum(next_jump, target), target)
                move = (stop > t_from).nonzero()[:, 0]
                if len(move):
                    ends = self.solve(z[move], torch.stack([t_from[move], stop[move]], 1))
                    z = z.index_copy(0, move, ends[:, -1])
                    t_from = t_from.index_copy(0, move, stop[move])
                if not bool(jump.any()):
                    break
                z = torch.where(jump[:, None], z + std * torch.randn_like(z), z)
                next_jump = torch.where(jump, next_jump + period, next_jump)
            out.append(z)
        return torch.stack(out, 1) if out else z.new_zeros(z.shape[0], 0, z.shape[1])

    def posterior_draws(self, batch: SequenceBatch, n_samples: int,
                        z0_noise: Tensor | None = None,
                        posterior: tuple[Tensor, Tensor] | None = None
                        ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """K = n_samples draws z_0 ~ q(z_0 | x) of a prepared batch and their latent paths:
        z0 (K, B, Z), z (K, B, T, Z) at the observation times, q mean and variance (B, Z).
        ``z0_noise`` (K, B, Z) fixes the standard normal draws; ``posterior``: q's mean
        and variance in place of the encoder's."""
        q_mean, q_var = self.initial_posterior_of(batch) if posterior is None else posterior
        K, (B, Z) = n_samples, q_mean.shape
        eps = torch.randn((K, B, Z), dtype=q_mean.dtype, device=q_mean.device) \
            if z0_noise is None else z0_noise.to(q_mean)
        z0 = q_mean + q_var.sqrt() * eps                                      # (K, B, Z)
        z = self.solve(z0.reshape(K * B, Z), batch.t.repeat(K, 1),          # (K * B, T)
                       batch.lengths.repeat(K)).reshape(K, B, batch.n_steps, Z)
        return z0, z, q_mean, q_var

    def emission_log_prob(self, batch: SequenceBatch, z: Tensor) -> Tensor:
        """(K, B) log p(x | z) of the observed entries along latent paths z (K, B, T, Z)."""
        return self.observation.log_prob(batch.x, self.emission(z), batch.mask).sum((-1, -2))

    def elbo_parts(self, batch: SequenceBatch, n_samples: int, noise: Tensor | None = None,
                   phase: int = 0, posterior: tuple[Tensor, Tensor] | None = None
                   ) -> tuple[Tensor, Tensor]:
        """E_q log p(x | z) (B,) over ``n_samples`` draws and the KL per latent dimension
        (B, Z) of a prepared batch; ``posterior``: q's mean and variance ((B, S, Z) with
        segments, else (B, Z)) in place of the encoder's."""
        if self.segmented:
            _, z, arrive, q_mean, q_var = self.segment_paths(batch, n_samples, noise, phase,
                                                             posterior)
            kl_dims = self.segment_kl(q_mean, q_var, arrive,
                                      self.segment_starts(batch, phase)[1])
        else:
            _, z, q_mean, q_var = self.posterior_draws(batch, n_samples, noise, posterior)
            kl_dims = kl_diag_gaussians(q_mean, q_var, torch.zeros_like(q_mean),
                                        torch.ones_like(q_var))                # (B, Z)
        return self.emission_log_prob(batch, z).mean(0), kl_dims

    def refined(self, batch: SequenceBatch, q: tuple[Tensor, Tensor],
                free: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """q = (mean, variance) of a prepared batch after ``refine_steps`` Adam steps on
        the batch's ELBO (``REFINE_SAMPLES`` draws) with the networks fixed: a sum of one
        term per sequence, so each sequence is refined as it would be alone. ``free``
        (bool, q's shape): the entries that move (None: all). Semi-amortised inference
        (Kim et al. 2018): the encoder's q is the start that a few steps improve."""
        q_mean, q_var = (v.detach() for v in q)
        if self.config.refine_steps == 0:
            return q_mean, q_var
        free = torch.ones_like(q_mean, dtype=torch.bool) if free is None else free
        mean, log_var = q_mean.clone().requires_grad_(True), q_var.log().requires_grad_(True)
        adam = torch.optim.Adam([mean, log_var], lr=self.config.refine_lr)
        with torch.enable_grad():
            for _ in range(self.config.refine_steps):
                posterior = (torch.where(free, mean, q_mean),
                             torch.where(free, log_var.exp(), q_var))
                log_lik, kl_dims = self.elbo_parts(batch, REFINE_SAMPLES, posterior=posterior)
                loss = (kl_dims.sum(-1) - log_lik).sum()
                if not torch.isfinite(loss):
                    raise NumericalError(
                        "the latent ODE's refinement of q before a forecast reached a "
                        f"non-finite ELBO ({float(loss)}); set refine_steps=0 or a smaller "
                        f"refine_lr (now {self.config.refine_lr})")
                mean.grad, log_var.grad = torch.autograd.grad(loss, [mean, log_var])
                adam.step()
        return (torch.where(free, mean.detach(), q_mean),
                torch.where(free, log_var.detach().exp(), q_var))

    def last_segments(self, batch: SequenceBatch) -> tuple[SequenceBatch, Tensor, Tensor]:
        """What a forecast starts from, cut from a prepared batch: each sequence's last
        segment and the one before it (their observations alone; that segment's path
        depends on nothing earlier, and its prior on the one before), as a batch of at
        most 2 M steps; each row's index there of the last segment (B,) (0 or 1), and of
        the segments of the full batch the two are (B, 2)."""
        M = self.config.segment_steps
        lengths = batch.lengths.to(batch.t.device)
        last = (lengths - 1) // M                                            # (B,)
        first = (last - 1).clamp(min=0)
        sub_len = lengths - first * M
        steps = torch.arange(int(sub_len.max()), device=lengths.device)
        idx = torch.minimum(first[:, None] * M + steps[None], lengths[:, None] - 1)   # (B, T')
        inside = steps[None] < sub_len[:, None]
        pick = idx[..., None].expand(-1, -1, batch.dim)
        mask = batch.mask.gather(1, pick) & inside[..., None]
        sub = SequenceBatch(torch.where(mask, batch.x.gather(1, pick), 0.0), mask,
                            batch.t.gather(1, idx), sub_len.to(batch.lengths),
                            frame_shape=batch.frame_shape)
        return sub, (last > 0).long(), torch.stack([first, last], 1)

    def forecast_start(self, batch: SequenceBatch, n_samples: int) -> Tensor:
        """(K, B, Z) draws of the segmented model's latent state at each sequence's last
        time, from the last segment's q refined (``refine_steps``) given the segment
        before it (as the encoder's q has it), on a batch of those two segments alone,
        so that its cost does not grow with the sequence's length."""
        rows = torch.arange(batch.batch_size, device=batch.t.device)
        sub, at, segments = self.last_segments(batch)
        q_mean, q_var = self.segment_posterior_of(batch)
        q = (q_mean[rows[:, None], segments], q_var[rows[:, None], segments])     # (B, 2, Z)
        free = (torch.arange(2, device=at.device)[None] == at[:, None])[..., None]
        q = self.refined(sub, q, free.expand_as(q[0]))
        sub_last = (sub.lengths - 1).to(rows.device)
        return self.segment_paths(sub, n_samples, posterior=q)[1][:, rows, sub_last]

    # ------------------------------------------------------------------ contract
    def elbo(self, batch: SequenceBatch, n_samples: int = 1, *,
             z0_noise: Tensor | None = None) -> ELBOTerms:
        """E_q log p(x | z) - KL(q(z_0 | x) || N(0, I)), over ``n_samples`` draws of z_0
        (``z0_noise`` (K, B, Z): fixed standard normal draws)."""
        check_positive(n_samples=n_samples)
        batch = self._prepare(batch)
        log_lik, kl_dims = self.elbo_parts(batch, n_samples, z0_noise,
                                           self.draw_phase() if self.segmented else 0)
        return ELBOTerms(log_lik, kl_dims.sum(-1), batch.n_observed().to(log_lik), kl_dims)

    @torch.no_grad()
    def log_likelihood_bound(self, batch: SequenceBatch, k: int) -> Tensor:
        """IWAE bound with log w = log p(x | z) + log p(z_0) - log q(z_0 | x), (B,)."""
        batch = self._prepare(batch)

        def log_weights(n: int) -> Tensor:
            if self.segmented:
                s, z, arrive, q_mean, q_var = self.segment_paths(batch, n)
                valid = self.segment_starts(batch)[1]
                return self.emission_log_prob(batch, z) + self.segment_log_ratio(
                    s, arrive, q_mean, q_var, valid)
            z0, z, q_mean, q_var = self.posterior_draws(batch, n)
            log_prior = diag_gaussian_log_prob(z0, torch.zeros_like(z0), torch.ones_like(z0))
            log_q = diag_gaussian_log_prob(z0, q_mean, q_var)
            return self.emission_log_prob(batch, z) + (log_prior - log_q).sum(-1)
        return iwae_bound(log_weights, k)

    @torch.no_grad()
    def reconstruct(self, batch: SequenceBatch) -> Prediction:
        """Posterior predictive mean and std of every entry, Monte Carlo over q(z_0 | x)."""
        batch = self._checked(batch)                                       # data's times
        z = self.paths(self._in_model_time(batch), self.config.n_predict_samples)
        mean, var = self.observation.moments(self.emission(z))
        return Prediction(batch.t, *mixture_moments(mean, var))

    def paths(self, batch: SequenceBatch, n_samples: int) -> Tensor:
        """(K, B, T, Z) latent paths at the observation times of K posterior draws."""
        if self.segmented:
            return self.segment_paths(batch, n_samples)[1]
        return self.posterior_draws(batch, n_samples)[1]

    @torch.no_grad()
    def forecast(self, batch: SequenceBatch, t_future: Tensor,
                 u_future: Tensor | None = None) -> Prediction:
        """Predictive mean/std at any times ``t_future`` (B, H) after each sequence's last
        time: draws of z_0 from q(z_0 | x), the ODE solved from t_0 to those times (with
        segments: draws of the last segment's state, its ODE to the last time and on,
        with the jumps). q is the encoder's, refined for each sequence first
        (``refine_steps``). The model takes no inputs: ``u_future`` must be None."""
        batch = self._checked(batch)
        check_future(batch, t_future, u_future, 0)                # in the data's times
        t_asked = t_future
        batch = self._in_model_time(batch)
        t_future = self.model_time(t_future.to(batch.t))
        if self.segmented:
            K, B = self.config.n_predict_samples, batch.batch_size
            last = (batch.lengths - 1).to(batch.t.device)
            rows = torch.arange(B, device=last.device)
            z = self.forecast_start(batch, K)                                  # (K, B, Z)
            # jumps every M median steps from the last segment's start, the first after
            # the last time
            t_last = batch.t[rows, last]
            start = batch.t[rows, last - last % self.config.segment_steps]
            period = self.config.segment_steps * median_steps(batch.t, batch.lengths)
            first = start + (torch.floor((t_last - start) / period) + 1) * period
            z = self.roll_out(z.reshape(K * B, -1), t_last.repeat(K),
                              t_future.to(batch.t).repeat(K, 1), first.repeat(K),
                              period.repeat(K))
            mean, var = self.observation.moments(self.emission(z.reshape(K, B, *z.shape[1:])))
            return Prediction(t_asked.to(mean), *mixture_moments(mean, var))
        q_mean, q_var = self.refined(batch, self.initial_posterior_of(batch))
        K, (B, H), Z = self.config.n_predict_samples, t_future.shape, self.config.latent_dim
        z0 = q_mean + q_var.sqrt() * torch.randn((K, B, Z), dtype=q_mean.dtype,
                                                 device=q_mean.device)
        t0 = batch.t[:, :1]                                                   # (B, 1)
        grid = torch.cat([t0, t_future.to(t0)], 1).repeat(K, 1)               # (K * B, H + 1)
        z = self.solve(z0.reshape(K * B, Z), grid)[:, 1:].reshape(K, B, H, Z)
        mean, var = self.observation.moments(self.emission(z))
        return Prediction(t_asked.to(mean), *mixture_moments(mean, var))

    @torch.no_grad()
    def sample(self, n: int, t: Tensor, u: Tensor | None = None) -> Tensor:
        """(n, T, D) draws of x at the times ``t`` (T,): z_0 ~ N(0, I), then the ODE. The
        model takes no inputs: ``u`` must be None."""
        check_sample_times(t, u, 0, n)
        return self.observation.sample(self.emission(self.sample_latents(n, t)))

    def sample_latents(self, n: int, t: Tensor) -> Tensor:
        """(n, T, Z) prior paths at the times ``t`` (T,)."""
        z0 = torch.randn((n, self.config.latent_dim), dtype=self.like.dtype,
                         device=self.like.device)
        t = self.model_time(t.to(z0))
        if not self.segmented:
            return self.solve(z0, t)
        dt = t.diff().quantile(0.5) if len(t) > 1 else torch.ones((), dtype=t.dtype)
        period = (self.config.segment_steps * dt).expand(n)
        later = self.roll_out(z0, t[0].expand(n), t[1:].expand(n, -1), t[0] + period, period)
        return torch.cat([z0[:, None], later], 1)

    @torch.no_grad()
    def latent_moments(self, batch: SequenceBatch, n_samples: int) -> tuple[Tensor, Tensor]:
        """(B, T, Z) mean and std of z(t_k) over ``n_samples`` posterior draws (for plots)."""
        z = self.paths(self._prepare(batch), n_samples)                        # (K, B, T, Z)
        return z.mean(0), z.std(0)
