"""Variational RNN (Chung et al. 2015) under the dynvae model contract.

With a deterministic recurrent state h_t (h_{-1} = 0) and feature extractors
phi_x, phi_z, for steps t = 0..T-1:
    prior     p(z_t | h_{t-1}, u_t)          = N(mu_0(h, u), diag sigma_0^2(h, u))
    encoder   q(z_t | x_t, h_{t-1})          = N(mu_q(phi_x(x_t), h), diag sigma_q^2(...))
    decoder   p(x_t | z_t, h_{t-1}, u_t)     (Gaussian or Bernoulli)
    recurrence h_t = GRU([phi_x(x_t), phi_z(z_t)], h_{t-1})
This is seed eq. 11-13 with p(x_t | x_{1:t-1}, z_{1:t}) and p(z_t | x_{1:t-1}, z_{1:t-1})
both carried by h_{t-1}. Missing entries reach phi_x as [x, mask, u], an unseen entry
holding its last seen value (0 before it: causal, as the recurrence must be); padding beyond
``lengths`` is excluded from every term. Generation (``sample``, ``forecast``) must feed
some x_t back into the recurrence: ``generation_feedback="mean"`` feeds the decoder's mean
(deterministic feedback, the usual choice), ``"sample"`` feeds the drawn x_t (exact
ancestral sampling from the model). Discrete time: one step per row (``forecast`` maps
t_future to steps on each sequence's grid; irregular times are warned about once;
``time_gap_input`` adds the time gap as an input, see dynvae.models.time_gaps).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor, nn

from dynvae.data.batch import SequenceBatch
from dynvae.gaussian import diag_gaussian_log_prob, kl_diag_gaussians
from dynvae.models.base import DVAE, ELBOTerms, Prediction
from dynvae.models.common import (
    FEEDBACKS,
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
from dynvae.nn.encoders import reverse_padded
from dynvae.nn.loops import gaussian_mlp_steps, gru_cell_steps
from dynvae.nn.mlp import MLP, GaussianHead, trunk
from dynvae.nn.observation import OBSERVATIONS
from dynvae.nn.transition import with_input

# what q(z_t | ·) reads besides h_{t-1}: x_t alone (Chung et al. 2015), or x_t and a
# backward summary of x_{t:T}
ENCODERS = ("filtering", "bidirectional")


@dataclass
class VRNNConfig(FrameOptions, DictConfig):
    """Configuration of :class:`VRNN`. mlp_hidden: hidden layers of the prior, encoder,
    decoder and feature networks; observation: "gaussian" or "bernoulli";
    generation_feedback: "mean" or "sample" (see the module docstring).
    free_emission_variance: one learned variance per data dimension (the default, None,
    for the Gaussian observation) or, False, a function of z. encoder:
    "bidirectional" (q(z_t | x_t, h_{t-1}, b_t) with b_t a backward GRU state over
    x_{t:T}, which lets a missing x_t be inferred from the entries after it) or
    "filtering" (q(z_t | x_t, h_{t-1}) of Chung et al. 2015). hide_from_encoder: share
    of the observed entries hidden at random from the encoder and the recurrence while
    training (still scored; ``dynvae.models.common.encoder_mask``). time_gap_input: add
    log(dt / median dt) as an input channel (dynvae.models.time_gaps). frame_encoder,
    frame_decoder: "conv" for convolutional frame models on image data: phi_x reads
    the conv encoder's features, the decoder is the conv decoder
    (dynvae.models.frames)."""

    model_name = "VRNN"

    latent_dim: int = 16
    hidden_size: int = 64
    feature_size: int = 64
    mlp_hidden: tuple[int, ...] = (64,)
    observation: str = "gaussian"
    free_emission_variance: bool | None = None
    min_var: float = 1e-4
    generation_feedback: str = "mean"
    n_predict_samples: int = 64
    encoder: str = "bidirectional"
    hide_from_encoder: float = 0.0
    time_gap_input: bool = False

    def __post_init__(self) -> None:
        check_choice("observation", self.observation, OBSERVATIONS)
        self.check_frames()
        check_choice("encoder", self.encoder, dict.fromkeys(ENCODERS))
        check_hide_rate(self.hide_from_encoder)
        check_choice("generation_feedback", self.generation_feedback, FEEDBACKS)
        self.mlp_hidden = as_sizes("mlp_hidden", self.mlp_hidden)
        check_positive(latent_dim=self.latent_dim, hidden_size=self.hidden_size,
                       feature_size=self.feature_size, n_predict_samples=self.n_predict_samples)
        check_observation(self.observation, bool(self.free_emission_variance), self.min_var)


class VRNNSteps(NamedTuple):
    """Per-step outputs of a pass with K posterior samples.

    log_lik, log_ratio (log p(z_t|h) - log q(z_t|x,h)): (K, B, T); kl: (K, B, T, Z) per
    latent dimension; zero on padding.
    mean, var: (K, B, T, D) decoder moments.  h: (K, B, T, H) state after step t.
    """

    log_lik: Tensor
    kl: Tensor
    log_ratio: Tensor
    mean: Tensor
    var: Tensor
    h: Tensor


class VRNN(DVAE):
    """Variational RNN. Args: config: :class:`VRNNConfig`; data_dim: D; input_dim: U."""

    Config = VRNNConfig

    def __init__(self, config: VRNNConfig, data_dim: int, input_dim: int = 0) -> None:
        super().__init__()
        check_dims(data_dim, input_dim)
        c = self.config = config
        Z, H, F, D = c.latent_dim, c.hidden_size, c.feature_size, data_dim
        U = input_width(input_dim, c.time_gap_input)
        self.data_dim, self.input_dim = D, input_dim
        self.time_gaps = TimeGapFeature() if c.time_gap_input else None
        frames, width = frame_input(c, D, U)                  # [x filled, mask, u] -> phi_x
        self.phi_x = MLP(width, c.mlp_hidden, F, activate_output=True)
        if c.frame_encoder != "mlp":
            self.phi_x = nn.Sequential(frames, self.phi_x)
        self.phi_z = MLP(Z, c.mlp_hidden, F, activate_output=True)
        self.prior_trunk, w = trunk(H + U, c.mlp_hidden)
        self.prior_head = GaussianHead(w, Z, c.min_var)
        backward = c.encoder == "bidirectional"
        self.backward_rnn = nn.GRU(F, H, batch_first=True) if backward else None
        self.encoder_trunk, w = trunk(H + F + (H if backward else 0), c.mlp_hidden)
        self.encoder_head = GaussianHead(w, Z, c.min_var)
        self.decoder_trunk, w = trunk(H + F + U, c.mlp_hidden)
        free = resolved_free_variance(c.observation, c.free_emission_variance)
        self.observation = observation_model(c, w, D, free)
        self.rnn = nn.GRUCell(2 * F, H)
        self.feedback = FEEDBACKS[c.generation_feedback]

    def _prepare(self, batch: SequenceBatch) -> SequenceBatch:
        batch = prepare_batch(batch, self.data_dim, self.input_dim, self.prior_head.mean.weight)
        self.observation.check_data(batch.x, batch.mask)
        return with_time_gaps(self, batch, self.time_gaps)

    def prior(self, h: Tensor, u: Tensor | None) -> tuple[Tensor, Tensor]:
        """p(z_t | h_{t-1}, u_t): h (…, H) -> mean, var (…, Z)."""
        return self.prior_head(self.prior_trunk(with_input(h, u)))

    def decoder(self, h: Tensor, z_features: Tensor, u: Tensor | None) -> tuple[Tensor, ...]:
        """p(x_t | z_t, h_{t-1}, u_t) parameters, each (…, D)."""
        return self.observation(self.decoder_trunk(with_input(torch.cat([h, z_features], -1),
                                                              u)))

    def steps(self, batch: SequenceBatch, n_samples: int) -> VRNNSteps:
        """Run the filter-like pass with K = n_samples reparametrised samples per sequence."""
        batch = self._prepare(batch)
        K, (B, T) = n_samples, batch.x.shape[:2]
        rep = lambda v: v.expand(K, *v.shape).reshape(K * B, *v.shape[1:])   # (K*B, …)
        x, mask = rep(batch.x), rep(batch.mask)
        u = None if batch.u is None else rep(batch.u)
        seen = encoder_mask(batch, self.config.hide_from_encoder, self.training)
        # phi_x also feeds the generative recurrence h_t: unseen entries hold their last
        # seen value there (a time-interpolated fill would read x after step t into the
        # prior of x_t)
        fx = self.phi_x(observation_features(batch, seen, fill="carry"))      # (B, T, F)
        context = [self.backward_summary(fx, batch.lengths)] if self.backward_rnn \
            else []                                                          # (B, T, H)
        h = x.new_zeros(K * B, self.config.hidden_size)
        # the loop runs only what the recurrence needs (q, the draw, phi_z, the GRU); the
        # prior p(z_t | h_{t-1}) and the decoder p(x_t | z_t, h_{t-1}) are evaluated for
        # all steps at once afterwards, and the encoder's and the GRU's products with the
        # inputs known beforehand (phi_x, the backward summary) once per sequence for
        # all steps (dynvae.nn.loops), on rows k B + b (sample k of sequence b)
        posterior = gaussian_mlp_steps(self.encoder_trunk, self.encoder_head,
                                       self.config.hidden_size, torch.cat([fx, *context], -1),
                                       K)
        recur = gru_cell_steps(self.rnn, fx, K)
        hs, zs, fzs, q_means, q_vars = [h], [], [], [], []
        for t in range(T):
            qm, qv = posterior(t, h)
            # one draw per step (K, B, Z): padding steps after the end change no draw
            eps = torch.randn((K, B, qm.shape[-1]), dtype=qm.dtype, device=qm.device)
            z = torch.addcmul(qm, qv.sqrt(), eps.reshape(K * B, -1))         # (N, Z)
            fz = self.phi_z(z)
            h = recur(t, fz, h)
            hs.append(h)
            zs.append(z)
            fzs.append(fz)
            q_means.append(qm)
            q_vars.append(qv)
        h_prev, h_all = torch.stack(hs[:-1], 1), torch.stack(hs[1:], 1)      # (N, T, H)
        z, qm, qv = (torch.stack(v, 1) for v in (zs, q_means, q_vars))      # (N, T, Z)
        pm, pv = self.prior(h_prev, u)
        params = self.decoder(h_prev, torch.stack(fzs, 1), u)               # (N, T, D) each
        mean, var = self.observation.moments(params)
        valid = batch.valid.to(h.dtype)                                      # (B, T)
        shape = lambda v: v.reshape(K, B, T, *v.shape[2:])
        log_ratio = (diag_gaussian_log_prob(z, pm, pv)
                     - diag_gaussian_log_prob(z, qm, qv)).sum(-1)            # (N, T)
        return VRNNSteps(
            log_lik=shape(self.observation.log_prob(x, params, mask).sum(-1)),
            kl=shape(kl_diag_gaussians(qm, qv, pm, pv)) * valid[..., None],
            log_ratio=shape(log_ratio) * valid, mean=shape(mean), var=shape(var),
            h=shape(h_all))

    def backward_summary(self, fx: Tensor, lengths: Tensor) -> Tensor:
        """b_t: a GRU run from each sequence's last valid step back to step t over the
        features fx (B, T, F) -> (B, T, H); padding never reaches valid steps."""
        out, _ = self.backward_rnn(reverse_padded(fx, lengths))
        return reverse_padded(out, lengths)

    # ------------------------------------------------------------------ contract
    def elbo(self, batch: SequenceBatch, n_samples: int = 1) -> ELBOTerms:
        """Seed eq. 13 with the VRNN factors, averaged over ``n_samples`` samples."""
        check_positive(n_samples=n_samples)
        s = self.steps(batch, n_samples)
        kl_dims = s.kl.sum(-2).mean(0)                                       # (B, Z)
        return ELBOTerms(s.log_lik.sum(-1).mean(0), kl_dims.sum(-1),
                         batch.n_observed().to(s.kl), kl_dims)

    @torch.no_grad()
    def log_likelihood_bound(self, batch: SequenceBatch, k: int) -> Tensor:
        """IWAE bound with k samples of the sampled path densities, (B,)."""
        def log_weights(n: int) -> Tensor:
            s = self.steps(batch, n)
            return (s.log_lik + s.log_ratio).sum(-1)
        return iwae_bound(log_weights, k)

    @torch.no_grad()
    def reconstruct(self, batch: SequenceBatch) -> Prediction:
        """Posterior predictive mean/std of every entry, Monte Carlo over q."""
        s = self.steps(batch, self.config.n_predict_samples)
        return Prediction(batch.t, *mixture_moments(s.mean, s.var))

    def generate(self, h: Tensor, steps: int, u: Tensor | None = None
                 ) -> tuple[Tensor, Tensor, Tensor]:
        """Run the generative model from state h (N, H) with inputs u (N, steps, U):
        decoder means, variances and draws, each (N, steps, D)."""
        means, variances, draws = [], [], []
        ones = h.new_ones(h.shape[0], self.data_dim)
        for t in range(steps):
            u_t = None if u is None else u[:, t]
            pm, pv = self.prior(h, u_t)
            fz = self.phi_z(pm + pv.sqrt() * torch.randn_like(pm))
            params = self.decoder(h, fz, u_t)
            mean, var = self.observation.moments(params)
            draw = self.observation.sample(params)
            x_in = self.feedback(mean, draw)
            fx = self.phi_x(torch.cat([x_in, ones] + ([] if u_t is None else [u_t]), -1))
            h = self.rnn(torch.cat([fx, fz], -1), h)
            means.append(mean)
            variances.append(var)
            draws.append(draw)
        return torch.stack(means, 1), torch.stack(variances, 1), torch.stack(draws, 1)

    @torch.no_grad()
    def forecast(self, batch: SequenceBatch, t_future: Tensor,
                 u_future: Tensor | None = None) -> Prediction:
        """Predictive mean/std at ``t_future`` (B, H) after each sequence's last valid
        step: the generative model run k steps for t_future = t_last + k dt (discrete
        time: see :func:`common.steps_ahead`; with ``time_gap_input`` one step per
        forecast time, its gap an input). ``u_future`` (B, H, U) is required when the
        model takes inputs (then t_future must be the next H steps)."""
        K = self.config.n_predict_samples
        s = self.steps(batch, K)                                  # prepares the batch itself
        batch = self._prepare(batch)
        if self.time_gaps is None:
            k = forecast_steps(batch, t_future, u_future, self.input_dim)      # (B, H)
            u_steps = u_future
        else:
            k, u_steps = self.time_gaps.future_steps(batch, t_future, u_future,
                                                     self.input_dim)
        B, S = batch.batch_size, int(k.max())
        h = last_valid(s.h, batch.lengths).reshape(K * B, -1)                  # (N, H)
        u = None
        if u_steps is not None:
            u = u_steps.to(h).expand(K, *u_steps.shape).reshape(K * B, S, -1)
        mean, var, _ = self.generate(h, S, u)                                  # (N, S, D)
        at = lambda v: at_steps(v.reshape(K, B, S, -1), k)                     # (K, B, H, D)
        return Prediction(t_future, *mixture_moments(at(mean), at(var)))

    @torch.no_grad()
    def sample(self, n: int, t: Tensor, u: Tensor | None = None) -> Tensor:
        """(n, T, D) draws at the T steps ``t`` (T,); ``u`` (T, U) or (n, T, U) if inputs."""
        T = check_sample_times(t, u, self.input_dim, n, even=self.draws_at_steps)
        like = self.prior_head.mean.weight
        u = None if u is None else u.to(like).expand(n, T, self.input_dim)
        if self.time_gaps is not None:
            u = self.time_gaps.sample(t, u, n).to(like)
        return self.generate(like.new_zeros(n, self.config.hidden_size), T, u)[2]
