"""Kalman variational autoencoder (Fraccaro, Kamronn, Paquet & Winther 2017, "A disentangled
recognition and nonlinear dynamics model for unsupervised learning"): a per-frame VAE
whose latent pseudo-observations a_t follow a linear Gaussian state-space model with
mixed, history-dependent matrices.

Generative model (seed eq. 11 with two latent sequences, z_t the LGSSM state and a_t
the pseudo-observation; steps t = 0..T-1, 0-indexed like dynvae.ssm):
    z_0 ~ N(m_0, P_0)
    z_t = A_t z_{t-1} + B_t u_t + w_t,   w_t ~ N(0, Q)          (t >= 1)
    a_t = C_t z_t + v_t,                 v_t ~ N(0, R)
    x_t ~ p(x_t | a_t)                                         (Gaussian or Bernoulli decoder)
    [A_t, B_t, C_t] = sum_k alpha_t^k [A^k, B^k, C^k],  alpha_t = alpha(a_{0:t-1})
(the dynamics parameter network, dynvae.nn.dynamics_mixture), so
    p(x, a, z) = prod_t p(x_t | a_t) p(a_t | z_t, a_{<t}) p(z_t | z_{t-1}, a_{<t}, u_t).
Inference (seed eq. 12 with the structure of the true posterior over z):
    q(a, z | x) = prod_{t in O} q(a_t | x_t) * p(z | a_O, u),
q(a_t | x_t) a Gaussian encoder of the observed entries of frame t, O the frames with
at least one observed entry, and p(z | a_O, u) the exact Kalman smoother. Given the
drawn a, alpha_t depends on the past only, so the filter gives the exact log p(a_O | u)
(a frame outside O is a pure prediction step), and the bound (seed eq. 13) becomes
    L = E_q(a | x) [ log p(x | a) + log p(a_O | u) - log q(a_O | x) ],
reported as log_lik = E log p(x | a) and kl = E [log q(a_O | x) - log p(a_O | u)]; the
importance weights are the same three terms. Frames outside O are imputed through the
smoother: z_t ~ p(z_t | a_O), a_t ~ N(C_t z_t, R), x_t from the decoder.
Discrete time: one LGSSM step per row of the sequence, whatever its time stamp.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn.functional import softplus

from dynvae.data.batch import SequenceBatch
from dynvae.gaussian import batched_mv, diag_gaussian_log_prob, sampling_factor
from dynvae.gp.inference import ParallelKalman, SequentialKalman
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
from dynvae.nn.dynamics_mixture import DynamicsMixture, LSTMState
from dynvae.nn.mlp import GaussianHead, inverse_softplus, trunk
from dynvae.nn.observation import OBSERVATIONS
from dynvae.ssm import LinearGaussianSSM

# the largest state the defaults' rule gives (the Kalman recursions cost S^3 a step)
MAX_RULE_STATE = 16

# engines whose log-likelihood carries exact gradients through time-varying matrices
ENGINES = {"parallel": ParallelKalman, "sequential": SequentialKalman}


@dataclass
class KVAEConfig(FrameOptions, DictConfig):
    """Configuration of :class:`KVAE`.

    state_dim: S of z_t; pseudo_dim: P of a_t; n_matrices: K base matrices (1: a plain
    LGSSM over a_t, no weight network); dynamics_hidden: width of its LSTM.
    transition_noise / emission_noise / initial_variance: initial diagonal variances of Q,
    R and P_0 (learned when ``learn_noise``; m_0 is learned). engine: Kalman engine,
    "parallel" (associative scan) or "sequential". observation: "gaussian" or "bernoulli";
    free_emission_variance: for the Gaussian, True (the default, None) learns one variance
    per channel, False makes it a function of a_t. Empty hidden sizes make the encoder or
    decoder affine. hide_from_encoder: share of the observed entries hidden from the
    recognition network q(a_t | x_t) at random while training (still scored; see
    ``dynvae.models.common.encoder_mask``). frame_encoder, frame_decoder: "conv" for
    convolutional maps between
    frames x_t and pseudo-observations a_t on image data, the recognition and emission
    networks of Fraccaro et al. (2017) (dynvae.models.frames).
    """

    model_name = "KVAE"

    state_dim: int = 4
    pseudo_dim: int = 2
    n_matrices: int = 3
    dynamics_hidden: int = 32
    encoder_hidden: tuple[int, ...] = (64,)
    emission_hidden: tuple[int, ...] = (64,)
    observation: str = "gaussian"
    free_emission_variance: bool | None = None
    transition_noise: float = 0.08
    emission_noise: float = 0.03
    initial_variance: float = 1.0
    learn_noise: bool = True
    engine: str = "parallel"
    min_var: float = 1e-4
    n_predict_samples: int = 32
    hide_from_encoder: float = 0.0

    def sized_for(self, size) -> dict:
        """The fields the defaults' rule sizes from the data (``dynvae.train.defaults``,
        ``size`` a DataSize): pseudo_dim = Z, state_dim = min(2 Z, MAX_RULE_STATE),
        Z = size.latent_dim."""
        z = size.latent_dim
        return {"pseudo_dim": z, "state_dim": min(2 * z, MAX_RULE_STATE)}

    def __post_init__(self) -> None:
        check_choice("engine", self.engine, ENGINES)
        check_hide_rate(self.hide_from_encoder)
        check_choice("observation", self.observation, OBSERVATIONS)
        self.check_frames()
        self.encoder_hidden = as_sizes("encoder_hidden", self.encoder_hidden)
        self.emission_hidden = as_sizes("emission_hidden", self.emission_hidden)
        check_positive(state_dim=self.state_dim, pseudo_dim=self.pseudo_dim,
                       n_matrices=self.n_matrices, dynamics_hidden=self.dynamics_hidden,
                       transition_noise=self.transition_noise,
                       emission_noise=self.emission_noise,
                       initial_variance=self.initial_variance,
                       n_predict_samples=self.n_predict_samples)
        check_observation(self.observation, bool(self.free_emission_variance), self.min_var)


class KVAE(DVAE):
    """The Kalman VAE. Args: config: :class:`KVAEConfig`; data_dim: D; input_dim: U."""

    Config = KVAEConfig
    continuous_time = False
    takes_inputs = True

    def __init__(self, config: KVAEConfig, data_dim: int, input_dim: int = 0) -> None:
        super().__init__()
        check_dims(data_dim, input_dim)
        c = self.config = config
        S, P, D, U = c.state_dim, c.pseudo_dim, data_dim, input_dim
        self.data_dim, self.input_dim = D, U
        self.frame_input, width = frame_input(c, D, 0)      # [x_t * mask, mask] -> q(a_t | x_t)
        self.encoder_trunk, width = trunk(width, c.encoder_hidden)
        self.encoder_head = GaussianHead(width, P, min_var=c.min_var)
        self.emission_trunk, width = trunk(P, c.emission_hidden)
        free = resolved_free_variance(c.observation, c.free_emission_variance)
        self.observation = observation_model(c, width, D, free)
        self.dynamics = DynamicsMixture(S, P, U, c.n_matrices, c.dynamics_hidden)
        self.initial_mean = nn.Parameter(torch.zeros(S))
        raw = lambda v, n: nn.Parameter(inverse_softplus(torch.full((n,), float(v))),
                                        requires_grad=c.learn_noise)
        self.raw_transition_var = raw(c.transition_noise, S)
        self.raw_emission_var = raw(c.emission_noise, P)
        self.raw_initial_var = raw(c.initial_variance, S)
        self.engine = ENGINES[c.engine]()

    # ------------------------------------------------------------ building blocks
    @property
    def like(self) -> Tensor:
        return self.initial_mean

    def _prepare(self, batch: SequenceBatch) -> SequenceBatch:
        batch = prepare_batch(batch, self.data_dim, self.input_dim, self.like)
        self.observation.check_data(batch.x, batch.mask)
        return batch

    def emission(self, a: Tensor) -> tuple[Tensor, ...]:
        """Parameters of p(x_t | a_t): a (…, P) -> each (…, D)."""
        return self.observation(self.emission_trunk(a))

    def encode(self, batch: SequenceBatch) -> tuple[Tensor, Tensor, Tensor]:
        """q(a_t | x_t) of a prepared batch: mean, variance (B, T, P) and the frames O with
        an observed entry (B, T) bool. While training, the recognition network reads a
        share ``hide_from_encoder`` of the observed entries as unseen (linear fill)."""
        seen = encoder_mask(batch, self.config.hide_from_encoder, self.training)
        features = self.frame_input(observation_features(batch, seen, fill="steps")[
            ..., :2 * self.data_dim])
        mean, var = self.encoder_head(self.encoder_trunk(features))
        return mean, var, batch.mask.any(-1)

    def noise_variances(self) -> tuple[Tensor, Tensor, Tensor]:
        """Diagonals of Q (S,), R (P,), P_0 (S,)."""
        return (softplus(self.raw_transition_var), softplus(self.raw_emission_var),
                softplus(self.raw_initial_var))

    def state_space_model(self, alpha: Tensor, u: Tensor | None) -> LinearGaussianSSM:
        """The LGSSM over a for weights alpha (N, T, K) and inputs u (N, T, U) or None."""
        A, C, Bm = self.dynamics.matrices(alpha)                 # (N, T, S, S), (N, T, P, S)
        q, r, p0 = self.noise_variances()
        bias = None if Bm is None else batched_mv(Bm, u)         # (N, T, S)
        varying = {"transition_matrix", "emission_matrix"} | ({"transition_bias"} if Bm
                                                               is not None else set())
        return LinearGaussianSSM(self.initial_mean, torch.diag(p0), A, torch.diag(q), C,
                                 torch.diag(r), transition_bias=bias, time_varying=varying)

    def pseudo_model(self, a: Tensor, observed: Tensor, u: Tensor | None
                     ) -> tuple[LinearGaussianSSM, Tensor]:
        """LGSSM of pseudo-observations a (N, T, P) with frame mask observed (N, T): the
        model (its weights alpha from the observed past) and the entry mask (N, T, P)."""
        alpha, _ = self.dynamics.weights(DynamicsMixture.feed(a, observed))
        return self.state_space_model(alpha, u), observed[..., None].expand_as(a)

    def pseudo_log_likelihood(self, a: Tensor, observed: Tensor, u: Tensor | None) -> Tensor:
        """Exact log p(a_O | u) by the Kalman filter: a (N, T, P), observed (N, T) -> (N,)."""
        model, mask = self.pseudo_model(a, observed, u)
        a = torch.where(mask, a, torch.zeros_like(a))
        return self.engine.filter(model, a, mask).log_likelihood

    def draw_pseudo(self, batch: SequenceBatch, n: int) -> tuple[Tensor, ...]:
        """n reparametrised draws a ~ q(a | x) of a prepared batch, flattened sample-major:
        a (n * B, T, P), log q(a_O | x) (n, B), frame mask (n * B, T), inputs or None.
        Step t's noise is drawn before step t + 1's, so padding changes no draw."""
        mean, var, observed = self.encode(batch)
        B, T, P = mean.shape
        eps = torch.randn((T, n, B, P), dtype=mean.dtype, device=mean.device).permute(1, 2, 0, 3)
        a = mean + var.sqrt() * eps                                           # (n, B, T, P)
        log_q = torch.where(observed[..., None], diag_gaussian_log_prob(a, mean, var), 0.0)
        rows = lambda v: None if v is None else v.expand(n, *v.shape).reshape(n * B,
                                                                              *v.shape[1:])
        return (a.reshape(n * B, T, P), log_q.sum((-1, -2)), rows(observed), rows(batch.u))

    def log_weight_terms(self, batch: SequenceBatch, n: int) -> tuple[Tensor, Tensor]:
        """log p(x | a) and log p(a_O | u) - log q(a_O | x) of n draws of a, (n, B) each."""
        a, log_q, observed, u = self.draw_pseudo(batch, n)
        B = batch.batch_size
        log_p_a = self.pseudo_log_likelihood(a, observed, u).reshape(n, B)
        params = self.emission(a.reshape(n, B, *a.shape[1:]))
        log_lik = self.observation.log_prob(batch.x, params, batch.mask).sum((-1, -2))
        return log_lik, log_p_a - log_q

    # ------------------------------------------------------------------ contract
    def elbo(self, batch: SequenceBatch, n_samples: int = 1) -> ELBOTerms:
        """L = E_q [log p(x | a) + log p(a_O | u) - log q(a_O | x)] over ``n_samples``
        draws; kl is the Monte Carlo E_q [log q(a_O | x) - log p(a_O | u)]."""
        check_positive(n_samples=n_samples)
        batch = self._prepare(batch)
        log_lik, log_ratio = self.log_weight_terms(batch, n_samples)
        return ELBOTerms(log_lik.mean(0), -log_ratio.mean(0), batch.n_observed().to(log_lik))

    @torch.no_grad()
    def log_likelihood_bound(self, batch: SequenceBatch, k: int) -> Tensor:
        """IWAE bound log (1/k) sum_k p(x, a^k) / q(a^k | x), z integrated exactly, (B,)."""
        batch = self._prepare(batch)
        return iwae_bound(lambda n: sum(self.log_weight_terms(batch, n)), k)

    @torch.no_grad()
    def reconstruct(self, batch: SequenceBatch) -> Prediction:
        """Predictive mean/std of every entry: a_t ~ q(a_t | x_t) on frames with an
        observed entry, a_t ~ N(C_t z_t, R) with z_t from the Kalman smoother elsewhere."""
        batch = self._prepare(batch)
        n, B = self.config.n_predict_samples, batch.batch_size
        a, observed, model, smoothed = self.smoothed_states(batch, n)
        C = model.emission_matrix                                             # (N, T, P, S)
        mean = batched_mv(C, smoothed.smoothed_mean)
        cov = C @ smoothed.smoothed_cov @ C.transpose(-1, -2) + model.emission_cov
        imputed = mean + batched_mv(sampling_factor(cov), torch.randn_like(mean))
        a = torch.where(observed[..., None], a, imputed).reshape(n, B, *a.shape[1:])
        return Prediction(batch.t, *mixture_moments(*self.observation.moments(self.emission(a))))

    def smoothed_states(self, batch: SequenceBatch, n: int):
        """n draws a ~ q(a | x) of a prepared batch, their frame mask (n * B, T), the LGSSM
        over them and its smoother result (moments (n * B, T, S, …))."""
        a, _, observed, u = self.draw_pseudo(batch, n)
        model, mask = self.pseudo_model(a, observed, u)
        a = torch.where(mask, a, torch.zeros_like(a))
        return a, observed, model, self.engine.smoother(model, a, mask)

    @torch.no_grad()
    def latent_moments(self, batch: SequenceBatch, n_samples: int) -> tuple[Tensor, Tensor]:
        """(B, T, S) mean and std of the LGSSM state z_t given x: the smoothed moments
        p(z_t | a_O) mixed over ``n_samples`` draws of a (for plots)."""
        batch = self._prepare(batch)
        *_, smoothed = self.smoothed_states(batch, n_samples)
        B, S = batch.batch_size, self.config.state_dim
        mean = smoothed.smoothed_mean.reshape(n_samples, B, -1, S)
        var = torch.diagonal(smoothed.smoothed_cov, dim1=-2, dim2=-1).reshape(mean.shape)
        return mixture_moments(mean, var)

    def rollout(self, z: Tensor, state: LSTMState | None, feed: Tensor, steps: int,
                u: Tensor | None) -> tuple[Tensor, tuple[Tensor, ...]]:
        """Run the generative model ``steps`` steps on from the state z (N, S), LSTM state
        and next feed (N, 1, P + 1); u (N, steps, U) or None. Returns the pseudo-observations
        (N, steps, P) and the decoder parameters, each (N, steps, D)."""
        q, r, _ = self.noise_variances()
        a_seq = []
        for j in range(steps):
            alpha, state = self.dynamics.weights(feed, state)                 # (N, 1, K)
            A, C, Bm = self.dynamics.matrices(alpha[:, 0])
            z = batched_mv(A, z) + q.sqrt() * torch.randn_like(z)
            if Bm is not None:
                z = z + batched_mv(Bm, u[:, j])
            a = batched_mv(C, z) + r.sqrt() * torch.randn(z.shape[0], r.shape[0], dtype=z.dtype,
                                                          device=z.device)
            a_seq.append(a)
            feed = torch.cat([a, torch.ones_like(a[:, :1])], -1)[:, None]
        a = torch.stack(a_seq, 1) if a_seq else z.new_zeros(z.shape[0], 0, self.config.pseudo_dim)
        return a, self.emission(a)

    @torch.no_grad()
    def forecast(self, batch: SequenceBatch, t_future: Tensor,
                 u_future: Tensor | None = None) -> Prediction:
        """Predictive mean/std at ``t_future`` (B, H), k steps after each sequence's last
        valid step (t_last + k dt, discrete time): a ~ q(a | x), z at the last step from
        the Kalman filter, then the generative model rolled forward. ``u_future`` (B, H, U)
        is needed when the model takes inputs."""
        batch = self._prepare(batch)
        k = forecast_steps(batch, t_future, u_future, self.input_dim)           # (B, H)
        n, B = self.config.n_predict_samples, batch.batch_size
        a, _, observed, u = self.draw_pseudo(batch, n)
        model, mask = self.pseudo_model(a, observed, u)
        f = self.engine.filter(model, torch.where(mask, a, torch.zeros_like(a)), mask)
        lengths = batch.lengths.repeat(n)                                      # (n * B,)
        mean, cov = last_valid(f.filtered_mean, lengths), f.filtered_cov[
            torch.arange(n * B), lengths - 1]
        z = mean + batched_mv(sampling_factor(cov), torch.randn_like(mean))  # (N, S)
        feeds = DynamicsMixture.feed(a, observed)
        state = self.dynamics.final_state(feeds, lengths)
        last = last_valid(torch.cat([torch.where(observed[..., None], a, 0.0),
                                     observed[..., None].to(a)], -1), lengths)
        u_next = None if u_future is None else u_future.to(a).repeat(n, 1, 1)
        _, params = self.rollout(z, state, last[:, None], int(k.max()), u_next)
        moments = (at_steps(v.reshape(n, B, *v.shape[1:]), k)
                   for v in self.observation.moments(params))                 # (n, B, H, D)
        return Prediction(t_future.to(a), *mixture_moments(*moments))

    @torch.no_grad()
    def sample(self, n: int, t: Tensor, u: Tensor | None = None) -> Tensor:
        """(n, T, D) draws at the T steps ``t`` (T,); ``u`` (T, U) or (n, T, U) if inputs."""
        T = check_sample_times(t, u, self.input_dim, n, even=self.draws_at_steps)
        like, (_, r, p0) = self.like, self.noise_variances()
        u = None if u is None else u.to(like).expand(n, T, self.input_dim)
        z0 = self.initial_mean + p0.sqrt() * torch.randn(n, p0.shape[0], dtype=like.dtype,
                                                         device=like.device)
        feed = like.new_zeros(n, 1, self.config.pseudo_dim + 1)
        alpha, state = self.dynamics.weights(feed)
        _, C, _ = self.dynamics.matrices(alpha[:, 0])
        a0 = batched_mv(C, z0) + r.sqrt() * torch.randn(n, r.shape[0], dtype=like.dtype,
                                                        device=like.device)
        feed = torch.cat([a0, torch.ones_like(a0[:, :1])], -1)[:, None]
        a_rest, _ = self.rollout(z0, state, feed, T - 1, None if u is None else u[:, 1:])
        a = torch.cat([a0[:, None], a_rest], 1)                                # (n, T, P)
        return self.observation.sample(self.emission(a))
