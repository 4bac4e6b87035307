"""SRNN, the stochastic recurrent neural network (Fraccaro et al. 2016), under the dynvae
model contract.

Generative model: seed eq. 11 with a deterministic forward recurrence h_t carrying
x_{1:t-1} and u_{1:t}, and a Markov chain of latents given it (steps t = 1..T; 0-indexed
in the code):
    h_t = GRU([x_{t-1}, u_t], h_{t-1})                          (h_0 = 0, no x_0)
    z_t ~ p(z_t | x_{1:t-1}, z_{1:t-1}, u_{1:t}) = p(z_t | z_{t-1}, h_t)
        = N(mu_p(z_{t-1}, h_t), diag sigma_p^2(z_{t-1}, h_t))    (z_0 = 0)
    x_t ~ p(x_t | x_{1:t-1}, z_{1:t}, u_{1:t}) = p(x_t | z_t, h_t)   (Gaussian or Bernoulli)
Inference: seed eq. 12 with the structure of the true posterior. Given z_{t-1} and h_t,
z_t is independent of x_{1:t-1} (D-separation), so p(z_t | z_{1:t-1}, x_{1:T}) =
p(z_t | z_{t-1}, h_t, x_{t:T}). A backward GRU reads it:
    a_t = GRU_back([x_t, u_t, h_t], a_{t+1})                    (sees x_{t:T}, h_{t:T})
    q(z_t | z_{1:t-1}, x_{1:T}) = q(z_t | z_{t-1}, a_t)
        = N(mu_p(z_{t-1}, h_t) + mu_res(z_{t-1}, a_t), diag sigma_q^2(z_{t-1}, a_t))
The posterior mean is a residual on the prior mean (Fraccaro et al. 2016, Sec. 3.2). As
h_{t+1:T} are functions of h_t and x_{t:T}, x_{1:t-1} reaches q(z_t | ·) only through
z_{t-1} and h_t, as in the true posterior. ELBO (seed eq. 13): closed-form
KL(q(z_t | z_{t-1}, a_t) || p(z_t | z_{t-1}, h_t)) at the drawn z_{t-1}. Missing entries
reach the forward recurrence as [x, mask] with x an unseen entry's last seen value (0
before it: causal) and the backward encoder filled by linear interpolation between seen
values; generation feeds the decoder mean or a draw
back as x_{t-1} (``generation_feedback``). One step per grid point; padding beyond
``lengths`` is excluded from every term.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from dynvae.data.batch import SequenceBatch
from dynvae.models.base import PathModel, PathTerms
from dynvae.models.common import (
    FEEDBACKS,
    check_dims,
    encoder_mask,
    fed_back,
    last_observation,
    last_valid,
    latent_terms,
    observation_features,
    previous_observations,
    repeat_samples,
    stack_steps,
)
from dynvae.models.frames import frame_input, observation_model
from dynvae.models.path_config import FeedbackPathConfig
from dynvae.nn.loops import gaussian_net_steps
from dynvae.nn.mlp import GaussianMLP, trunk
from dynvae.nn.recurrent import SequenceSummary, run_gru, step_gru
from dynvae.nn.transition import with_input


@dataclass
class SRNNConfig(FeedbackPathConfig):
    """Configuration of :class:`SRNN`. hidden_size: the forward GRU h_t; encoder_hidden: the
    backward GRU a_t; mlp_hidden: hidden layers of the prior, posterior and emission
    networks (empty: affine); observation: "gaussian" or "bernoulli";
    generation_feedback: "mean" or "sample" (see the module docstring).
    hide_from_recurrence: see :class:`FeedbackPathConfig`."""

    model_name = "SRNN"


class SRNN(PathModel):
    """SRNN. Args: config: :class:`SRNNConfig`; data_dim: D; input_dim: U (0: none)."""

    Config = SRNNConfig

    def __init__(self, config: SRNNConfig, data_dim: int, input_dim: int = 0) -> None:
        super().__init__()
        check_dims(data_dim, input_dim)
        c = self.config = config
        Z, H, D, U = c.latent_dim, c.hidden_size, data_dim, input_dim
        self.data_dim, self.input_dim = D, U
        # frames reach the forward recurrence (x_{t-1}) and the backward encoder (x_t)
        # through their own frame models: [x filled, mask, u] -> features
        self.previous_frames, width = frame_input(c, D, U)
        self.forward_rnn = nn.GRU(width, H, batch_first=True)
        self.prior = GaussianMLP(Z + H, c.mlp_hidden, Z, c.min_var)
        self.encoder_frames, width = frame_input(c, D, U)
        self.backward_summary = SequenceSummary(width + H, c.encoder_hidden, "backward")
        self.posterior = GaussianMLP(Z + c.encoder_hidden, c.mlp_hidden, Z, c.min_var)
        self.emission_trunk, width = trunk(Z + H, c.mlp_hidden)
        self.observation = observation_model(c, width, D, c.free_emission_variance)
        self.feedback = FEEDBACKS[c.generation_feedback]

    def deterministic_states(self, batch: SequenceBatch) -> Tensor:
        """h_t = GRU([x_{t-1}, u_t], h_{t-1}) of a prepared batch: (B, T, H)."""
        seen = encoder_mask(batch, self.config.hide_from_recurrence, self.training)
        previous = self.previous_frames(with_input(previous_observations(batch, seen), batch.u))
        return run_gru(self.forward_rnn, previous)

    def emission(self, z: Tensor, h: Tensor) -> tuple[Tensor, ...]:
        """Parameters of p(x_t | z_t, h_t): z (…, Z), h (…, H) -> each (…, D)."""
        return self.observation(self.emission_trunk(torch.cat([z, h], -1)))

    def draw_paths(self, batch: SequenceBatch, n_samples: int) -> PathTerms:
        K, (B, T), Z = n_samples, batch.x.shape[:2], self.config.latent_dim
        h = self.deterministic_states(batch)                                   # (B, T, H)
        features = self.encoder_frames(observation_features(batch, fill="steps"))  # (B,T,F+U)
        a = self.backward_summary(torch.cat([features, h], -1), batch.lengths)  # (B, T, A)
        # the prior's and the posterior's products with h_t and a_t are made once per
        # sequence for all steps (dynvae.nn.loops), on rows k B + b (sample k of sequence b)
        prior = gaussian_net_steps(self.prior, Z, h, K)
        posterior = gaussian_net_steps(self.posterior, Z, a, K)
        z_prev = h.new_zeros(K * B, Z)
        moments: list[list[Tensor]] = [[], [], [], [], []]          # z, q mean/var, p mean/var
        for t in range(T):
            p_mean, p_var = prior(t, z_prev)
            residual, q_var = posterior(t, z_prev)
            q_mean = p_mean + residual                                         # (K B, Z)
            eps = torch.randn((K, B, Z), dtype=h.dtype, device=h.device)
            z_prev = torch.addcmul(q_mean, q_var.sqrt(), eps.reshape(K * B, Z))
            for store, value in zip(moments, (z_prev, q_mean, q_var, p_mean, p_var),
                                    strict=True):
                store.append(value)
        z, q_mean, q_var, p_mean, p_var = (torch.stack(m, 1).reshape(K, B, T, Z)
                                           for m in moments)                   # (K, B, T, Z)
        params = self.emission(z, h.expand(K, -1, -1, -1))                     # (K, B, T, D)
        log_lik = self.observation.log_prob(batch.x, params, batch.mask).sum((-1, -2))
        kl_dims, log_ratio = latent_terms(z, q_mean, q_var, p_mean, p_var, batch.valid)
        return PathTerms(z, log_lik, kl_dims.sum(-1), log_ratio, params, (h,), kl_dims)

    def start_after(self, paths: PathTerms, batch: SequenceBatch) -> tuple[Tensor, ...]:
        K = paths.z.shape[0]
        h = repeat_samples(last_valid(paths.state[0], batch.lengths), K)       # (K*B, H)
        z = last_valid(paths.z, batch.lengths)                                 # (K, B, Z)
        return h, z.reshape(-1, z.shape[-1]), repeat_samples(last_observation(batch), K)

    def initial_state(self, n: int) -> tuple[Tensor, ...]:
        c, like = self.config, self.like
        return (like.new_zeros(n, c.hidden_size), like.new_zeros(n, c.latent_dim),
                like.new_zeros(n, 2 * self.data_dim))

    def generate(self, state: tuple[Tensor, ...], steps: int, u: Tensor | None
                 ) -> tuple[tuple[Tensor, ...], Tensor]:
        h, z, previous = state                                     # (N, H), (N, Z), (N, 2D)
        params_seq, draws = [], []
        for j in range(steps):
            inputs = with_input(previous, None if u is None else u[:, j])   # (N, 2D + U)
            h = step_gru(self.forward_rnn, self.previous_frames(inputs), h)
            p_mean, p_var = self.prior(torch.cat([z, h], -1))
            z = p_mean + p_var.sqrt() * torch.randn_like(p_mean)
            params = self.emission(z, h)
            draw = self.observation.sample(params)
            previous = fed_back(self.feedback(self.observation.moments(params)[0], draw))
            params_seq.append(params)
            draws.append(draw)
        return stack_steps(params_seq), torch.stack(draws, 1)
