"""Deep Kalman Filter (seed eqs. 14-24; Krishnan et al. 2015, 2017).

Generative model, steps t = 0..T-1 (0-indexed like dynvae.ssm):
    z_0 ~ p(z_0)                                  (N(0, I) or learned diagonal Gaussian)
    z_t ~ N(mu_z(z_{t-1}, u_t), diag sigma_z^2)   (eq. 18/23)
    x_t ~ p(x_t | z_t, u_t)                       (eq. 17/22: Gaussian or Bernoulli)
Inference: q(z_{0:T-1} | x) = prod_t q(z_t | z_{t-1}, context_t(x)) (eq. 16/19; the
encoder strategy decides which part of x step t sees). The ELBO (eq. 20-21) uses
reparametrised ancestral samples from q and the closed-form KL between q(z_t | ·) and
p(z_t | z_{t-1}) at the sampled z_{t-1}. With ``posterior_flow`` > 0 each factor of q is
that Gaussian followed by an inverse autoregressive flow (Kingma et al. 2016), and the
KL is the Monte Carlo estimate log q(z_t | ·) - log p(z_t | z_{t-1}) along the sampled
path. Discrete time: one transition per row (``forecast`` maps t_future to steps on
each sequence's grid; irregular times are warned about once; ``time_gap_input`` adds the
time gap as an input, see dynvae.models.time_gaps); padding beyond ``lengths`` is
excluded from every term.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

from dynvae.data.batch import SequenceBatch
from dynvae.errors import ConfigError
from dynvae.gaussian import diag_gaussian_log_prob, kl_diag_gaussians
from dynvae.models.base import DVAE, ELBOTerms, Prediction
from dynvae.models.common import (
    DictConfig,
    as_sizes,
    at_steps,
    check_choice,
    check_dims,
    check_hide_rate,
    check_observation,
    check_positive,
    check_sample_times,
    encoder_mask,
    forecast_steps,
    iwae_bound,
    last_valid,
    mixture_moments,
    observation_features,
    prepare_batch,
    resolved_free_variance,
)
from dynvae.models.frames import FrameOptions, frame_input, observation_model
from dynvae.models.time_gaps import TimeGapFeature, input_width, with_time_gaps
from dynvae.nn.encoders import ENCODERS
from dynvae.nn.iaf import InverseAutoregressiveFlow
from dynvae.nn.loops import input_share
from dynvae.nn.mlp import trunk
from dynvae.nn.observation import OBSERVATIONS
from dynvae.nn.transition import INITIAL_PRIORS, TRANSITIONS, with_input


@dataclass
class DKFConfig(FrameOptions, DictConfig):
    """Configuration of :class:`DeepKalmanFilter`. ``dynvae train`` trains it at a
    learning rate of 1e-2 unless --set gives one (the other models: 3e-3;
    dynvae.train.defaults).

    encoder: a name in ``dynvae.nn.encoders.ENCODERS`` ("backward", "local",
    "filtering", "bidirectional"). transition: "mlp" or "gated". observation:
    "gaussian" or "bernoulli". initial_prior: "standard" (N(0, I)) or "learned".
    free_emission_variance: one learned variance per data dimension (the default, None,
    for the Gaussian observation) or, False, a variance that is a function of z
    (``dynvae.models.common.resolved_free_variance``).
    Empty hidden sizes make the corresponding map affine. hide_from_encoder: share of
    the observed entries hidden from the encoder at random while training (still
    scored; see ``dynvae.models.common.encoder_mask``). time_gap_input: add
    log(dt / median dt) as an input channel (dynvae.models.time_gaps). frame_encoder,
    frame_decoder: "conv" for convolutional frame models on image data
    (dynvae.models.frames). posterior_flow: number of inverse autoregressive flow steps
    (Kingma et al. 2016) after each Gaussian factor q(z_t | z_{t-1}, context_t), each
    conditioned on [context_t, z_{t-1}] (0: the Gaussian posterior). With a flow the KL
    term is a single-sample Monte Carlo estimate, not closed form, and is not split over
    latent dimensions: ``ELBOTerms.kl_dims`` is None, so metrics.csv has no kl_dim
    columns, the collapse diagnostic is skipped and ``free_bits`` is unavailable.
    flow_hidden: hidden units of each flow step's masked autoregressive network.
    """

    model_name = "DKF"
    learning_rate = 1e-2    # `dynvae train`'s default for this model (train.defaults)

    latent_dim: int = 8
    encoder: str = "backward"
    transition: str = "mlp"
    observation: str = "gaussian"
    initial_prior: str = "standard"
    encoder_hidden: int = 64
    transition_hidden: tuple[int, ...] = (64,)
    emission_hidden: tuple[int, ...] = (64,)
    free_transition_variance: bool = False
    free_emission_variance: bool | None = None
    min_var: float = 1e-4
    n_predict_samples: int = 64
    hide_from_encoder: float = 0.0
    time_gap_input: bool = False
    posterior_flow: int = 0
    flow_hidden: int = 64

    def __post_init__(self) -> None:
        check_hide_rate(self.hide_from_encoder)
        self.check_frames()
        check_choice("encoder", self.encoder, ENCODERS)
        check_choice("transition", self.transition, TRANSITIONS)
        check_choice("observation", self.observation, OBSERVATIONS)
        check_choice("initial_prior", self.initial_prior, INITIAL_PRIORS)
        self.transition_hidden = as_sizes("transition_hidden", self.transition_hidden)
        self.emission_hidden = as_sizes("emission_hidden", self.emission_hidden)
        check_positive(latent_dim=self.latent_dim, encoder_hidden=self.encoder_hidden,
                       n_predict_samples=self.n_predict_samples, flow_hidden=self.flow_hidden)
        if isinstance(self.posterior_flow, bool) or not isinstance(self.posterior_flow, int) \
                or self.posterior_flow < 0:
            raise ConfigError(f"posterior_flow must be an integer >= 0 (flow steps), got "
                              f"{self.posterior_flow!r}")
        check_observation(self.observation, bool(self.free_emission_variance), self.min_var)


class PosteriorPaths(NamedTuple):
    """Ancestral samples from q and the densities along them, all (K, B, T, Z).

    q_mean, q_var: the Gaussian factor of q (before the flow, when there is one).
    log_q: (K, B, T) log q(z_t | z_{t-1}, context_t) with a flow, else None.
    """

    z: Tensor
    q_mean: Tensor
    q_var: Tensor
    p_mean: Tensor
    p_var: Tensor
    log_q: Tensor | None = None


class DeepKalmanFilter(DVAE):
    """The Deep Kalman Filter of seed eqs. 14-24, with missing values and control inputs.

    Args: config: :class:`DKFConfig`. data_dim: D. input_dim: U (0 for no inputs).
    """

    Config = DKFConfig

    def __init__(self, config: DKFConfig, data_dim: int, input_dim: int = 0) -> None:
        super().__init__()
        check_dims(data_dim, input_dim)
        c = self.config = config
        Z, D, U = c.latent_dim, data_dim, input_width(input_dim, c.time_gap_input)
        self.data_dim, self.input_dim = D, input_dim
        self.time_gaps = TimeGapFeature() if c.time_gap_input else None
        self.frame_input, width = frame_input(c, D, U)        # [x * mask, mask, u] -> encoder
        self.encoder = ENCODERS[c.encoder](width, Z, c.encoder_hidden, c.min_var)
        self.initial_prior = INITIAL_PRIORS[c.initial_prior](Z)
        self.transition = TRANSITIONS[c.transition](Z, U, c.transition_hidden, c.min_var,
                                                    c.free_transition_variance)
        self.emission_trunk, width = trunk(Z + U, c.emission_hidden)
        free = resolved_free_variance(c.observation, c.free_emission_variance)
        self.observation = observation_model(c, width, D, free)
        self.flow = None if not c.posterior_flow else InverseAutoregressiveFlow(
            Z, self.encoder.context_dim + Z, c.posterior_flow, c.flow_hidden)

    # ------------------------------------------------------------ building blocks
    def _prepare(self, batch: SequenceBatch) -> SequenceBatch:
        batch = prepare_batch(batch, self.data_dim, self.input_dim, self.encoder.z_start)
        self.observation.check_data(batch.x, batch.mask)
        return with_time_gaps(self, batch, self.time_gaps)

    def emission(self, z: Tensor, u: Tensor | None = None) -> tuple[Tensor, ...]:
        """Parameters of p(x_t | z_t, u_t): z (…, T, Z), u (…, T, U) -> each (…, T, D)."""
        return self.observation(self.emission_trunk(with_input(z, u)))

    def latent_prior(self, z: Tensor, u: Tensor | None) -> tuple[Tensor, Tensor]:
        """p(z_0) and p(z_t | z_{t-1}, u_t) along paths z (K, B, T, Z) -> mean, var (K, B, T, Z)."""
        m0, v0 = self.initial_prior(z.shape[:-2] + (1,), z)
        u_next = None if u is None else u[..., 1:, :]
        mt, vt = self.transition(z[..., :-1, :], u_next)
        return torch.cat([m0, mt], -2), torch.cat([v0, vt], -2)

    def posterior_paths(self, batch: SequenceBatch, n_samples: int) -> PosteriorPaths:
        """K = n_samples reparametrised ancestral draws z_t ~ q(z_t | z_{t-1}, context_t)."""
        seen = encoder_mask(batch, self.config.hide_from_encoder, self.training)
        # encoders that read x after step t start from the linear fill of unseen entries
        fill = "steps" if self.encoder.reads_future else "zero"
        ctx = self.encoder.summarise(self.frame_input(observation_features(batch, seen, fill)),
                                     batch.lengths)
        K, B = n_samples, batch.batch_size
        # the loop runs on K B rows, sample-major (row k B + b: sample k of sequence b)
        step = self.encoder.steps(ctx, K)
        flow = None if self.flow is None else self.conditioned_flow(ctx, K)
        z_prev = self.encoder.initial_latent((K * B,))                         # (K B, Z)
        zs, means, variances, bases, log_dets = [], [], [], [], []
        for t in range(ctx.shape[1]):
            mean, var = step(t, z_prev)                                        # (K B, Z)
            eps = torch.randn(mean.shape, dtype=mean.dtype, device=mean.device)
            z_t = torch.addcmul(mean, var.sqrt(), eps)
            if flow is not None:
                bases.append(z_t)
                z_t, log_det = flow(t, z_t, z_prev)
                log_dets.append(log_det)
            z_prev = z_t
            zs.append(z_prev)
            means.append(mean)
            variances.append(var)

        def paths(steps: list[Tensor]) -> Tensor:                             # (K, B, T, ·)
            out = torch.stack(steps, 1)
            return out.reshape(K, B, *out.shape[1:])
        z = paths(zs)
        p_mean, p_var = self.latent_prior(z, batch.u)
        q_mean, q_var = paths(means), paths(variances)
        log_q = None
        if flow is not None:    # change of variables (Kingma et al. 2016, eq. 9-11)
            log_q = diag_gaussian_log_prob(paths(bases), q_mean, q_var).sum(-1) \
                - paths(log_dets)                                              # (K, B, T)
        return PosteriorPaths(z, q_mean, q_var, p_mean, p_var, log_q)

    def conditioned_flow(self, ctx: Tensor, n_samples: int = 1
                         ) -> Callable[[int, Tensor, Tensor], tuple[Tensor, Tensor]]:
        """The posterior flow of each step t, conditioned on h_t = [context_t, z_{t-1}]:
        ctx (B, T, C) -> a map (t, z_base (K B, Z), z_prev (K B, Z)) -> z_t (K B, Z),
        log |det dz_t / dz_base| (K B,), rows sample-major as in :meth:`posterior_paths`
        (K = ``n_samples``). The flow's condition map is affine in h_t, so the context's
        share of it is computed for every step at once."""
        C = ctx.shape[-1]
        weight, bias = self.flow.condition.weight, self.flow.condition.bias
        from_context = input_share(weight, bias, slice(None, C), ctx, n_samples)
        from_latent, masked = weight[:, C:], self.flow.masked_weights()

        def step(t: int, z_base: Tensor, z_prev: Tensor) -> tuple[Tensor, Tensor]:
            conditioning = from_context[t] + z_prev @ from_latent.T       # (K B, n_steps H)
            return self.flow.transform(z_base, conditioning, masked)
        return step

    def path_terms(self, batch: SequenceBatch, n_samples: int
                   ) -> tuple[Tensor, Tensor | None, Tensor]:
        """Per-sample log-likelihood (K, B), closed-form KL per latent dimension (K, B, Z)
        (None with a posterior flow, whose KL has no closed form) and log p(z)/q(z)
        (K, B) of each path."""
        batch = self._prepare(batch)
        paths = self.posterior_paths(batch, n_samples)
        params = self.emission(paths.z, batch.u)
        log_lik = self.observation.log_prob(batch.x, params, batch.mask).sum((-1, -2))
        valid = batch.valid.to(paths.z.dtype)                                  # (B, T)
        log_p = diag_gaussian_log_prob(paths.z, paths.p_mean, paths.p_var).sum(-1)
        if paths.log_q is not None:
            return log_lik, None, ((log_p - paths.log_q) * valid).sum(-1)
        kl = kl_diag_gaussians(paths.q_mean, paths.q_var, paths.p_mean, paths.p_var)
        log_q = diag_gaussian_log_prob(paths.z, paths.q_mean, paths.q_var).sum(-1)
        return log_lik, (kl * valid[..., None]).sum(-2), ((log_p - log_q) * valid).sum(-1)

    # ------------------------------------------------------------------ contract
    def elbo(self, batch: SequenceBatch, n_samples: int = 1) -> ELBOTerms:
        """Seed eq. 20-21, averaged over ``n_samples`` posterior paths. With a posterior
        flow the KL of each path is log q(z) - log p(z) at its draws (Kingma et al. 2016,
        eq. 3) and ``kl_dims`` is None."""
        check_positive(n_samples=n_samples)
        log_lik, kl_dims, log_ratio = self.path_terms(batch, n_samples)
        if kl_dims is None:
            return ELBOTerms(log_lik.mean(0), -log_ratio.mean(0),
                             batch.n_observed().to(log_lik))
        kl_dims = kl_dims.mean(0)                                              # (B, Z)
        return ELBOTerms(log_lik.mean(0), kl_dims.sum(-1), batch.n_observed().to(log_lik),
                         kl_dims)

    @torch.no_grad()
    def log_likelihood_bound(self, batch: SequenceBatch, k: int) -> Tensor:
        """IWAE bound log (1/k) sum_k p(x, z^k) / q(z^k | x) with path densities, (B,)."""
        def log_weights(n: int) -> Tensor:
            log_lik, _, log_ratio = self.path_terms(batch, n)
            return log_lik + log_ratio
        return iwae_bound(log_weights, k)

    @torch.no_grad()
    def reconstruct(self, batch: SequenceBatch) -> Prediction:
        """Posterior predictive mean and std of every entry, Monte Carlo over q."""
        batch = self._prepare(batch)
        paths = self.posterior_paths(batch, self.config.n_predict_samples)
        mean, var = self.observation.moments(self.emission(paths.z, batch.u))
        return Prediction(batch.t, *mixture_moments(mean, var))

    def rollout(self, z_prev: Tensor, steps: int, u: Tensor | None = None) -> Tensor:
        """Sample the learned prior forward: z_prev (…, Z), u (…, steps, U) -> (…, steps, Z)."""
        zs = []
        for h in range(steps):
            mean, var = self.transition(z_prev, None if u is None else u[..., h, :])
            z_prev = mean + var.sqrt() * torch.randn_like(mean)
            zs.append(z_prev)
        return torch.stack(zs, -2) if zs else z_prev.new_zeros((*z_prev.shape[:-1], 0,
                                                                  z_prev.shape[-1]))

    @torch.no_grad()
    def forecast(self, batch: SequenceBatch, t_future: Tensor,
                 u_future: Tensor | None = None) -> Prediction:
        """Predictive mean/std at ``t_future`` (B, H) after each sequence's last valid step:
        posterior draws of the last state, rolled forward by the prior k steps for
        t_future = t_last + k dt (discrete time: see :func:`common.steps_ahead`).
        ``u_future`` (B, H, U) is required when the model takes inputs (then t_future
        must be the next H steps)."""
        batch = self._prepare(batch)
        if self.time_gaps is None:
            k = forecast_steps(batch, t_future, u_future, self.input_dim)      # (B, H)
            u = u_future
        else:   # one transition per forecast time, its gap an input
            k, u = self.time_gaps.future_steps(batch, t_future, u_future, self.input_dim)
        paths = self.posterior_paths(batch, self.config.n_predict_samples)
        z_last = last_valid(paths.z, batch.lengths)                            # (K, B, Z)
        u = None if u is None else u.to(z_last)
        z = at_steps(self.rollout(z_last, int(k.max()), u), k)                 # (K, B, H, Z)
        mean, var = self.observation.moments(self.emission(z, u))
        return Prediction(t_future, *mixture_moments(mean, var))

    @torch.no_grad()
    def sample(self, n: int, t: Tensor, u: Tensor | None = None) -> Tensor:
        """(n, T, D) draws at the T steps ``t`` (T,); ``u`` (T, U) or (n, T, U) if inputs."""
        T = check_sample_times(t, u, self.input_dim, n, even=self.draws_at_steps)
        like = self.encoder.z_start
        u = None if u is None else u.to(like).expand(n, T, self.input_dim)
        if self.time_gaps is not None:
            u = self.time_gaps.sample(t, u, n).to(like)
        mean, var = self.initial_prior((n,), like)
        z0 = mean + var.sqrt() * torch.randn_like(mean)                        # (n, Z)
        u_next = None if u is None else u[:, 1:]
        z = torch.cat([z0[:, None], self.rollout(z0, T - 1, u_next)], 1)        # (n, T, Z)
        return self.observation.sample(self.emission(z, u))
