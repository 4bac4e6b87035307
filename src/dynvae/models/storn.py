"""STORN, the stochastic recurrent network (Bayer & Osendorfer 2014), under the dynvae
model contract.

Generative model: seed eq. 11 with i.i.d. latents, p(z_t | x_{1:t-1}, z_{1:t-1}) = p(z_t),
and a recurrence carrying x_{1:t-1} and z_{1:t} (steps t = 1..T; 0-indexed in the code):
    z_t ~ p(z_t) = N(0, I)
    h_t = GRU([x_{t-1}, z_t, u_t], h_{t-1})                        (h_0 = 0, no x_0)
    x_t ~ p(x_t | x_{1:t-1}, z_{1:t}, u_{1:t}) = p(x_t | h_t)       (Gaussian or Bernoulli)
Inference: seed eq. 12 with STORN's forward-RNN encoder,
    g_t = GRU([x_t, u_t], g_{t-1})
    q(z_{1:T} | x_{1:T}) = prod_t q(z_t | x_{1:t}, u_{1:t})
    q(z_t | x_{1:t}, u_{1:t}) = N(mu(g_t), diag sigma^2(g_t))
The true posterior factor p(z_t | z_{1:t-1}, x_{1:T}) also depends on z_{1:t-1} and on
x_{t+1:T}; STORN's filtering encoder drops both (an approximation: it costs bound, never
correctness). ELBO (seed eq. 13): every KL(q(z_t | x_{1:t}) || N(0, I)) is closed-form and
independent of the drawn path. Missing entries reach both recurrences as [x, mask]
with x an unseen entry's last seen value (0 before it: causal, never a later value),
so the decoder conditions on which entries of x_{t-1} were seen. (Filled with 0, a
recurrence trained on complete sequences met the mask channel's 0 only at test time:
45 s imputation MSE 3-23x worse, docs/results/quality.md.)
Generation (``sample``, ``forecast``) feeds the decoder mean (``generation_feedback=
"mean"``) or a draw (``"sample"``, exact ancestral sampling) back as x_{t-1}. Time stamps
are not used: one step per grid point; padding beyond ``lengths`` is excluded.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from dynvae.data.batch import SequenceBatch
from dynvae.models.base import PathModel, PathTerms
from dynvae.models.common import (
    FEEDBACKS,
    check_choice,
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
    stepwise_normal,
)
from dynvae.models.frames import frame_input, observation_model
from dynvae.models.path_config import FeedbackPathConfig
from dynvae.nn.encoders.base import reverse_padded
from dynvae.nn.mlp import GaussianMLP, trunk
from dynvae.nn.recurrent import run_gru, step_gru
from dynvae.nn.transition import with_input

ENCODERS = ("filtering", "bidirectional")


@dataclass
class STORNConfig(FeedbackPathConfig):
    """Configuration of :class:`STORN`. hidden_size: the decoder GRU h_t; encoder_hidden:
    the encoder GRU g_t; mlp_hidden: hidden layers of the encoder head and the emission
    (empty: affine); observation: "gaussian" or "bernoulli"; generation_feedback: "mean"
    or "sample" (see the module docstring). hide_from_recurrence: see
    :class:`FeedbackPathConfig`. encoder: "filtering" (q(z_t | x_{1:t}), the paper's) or
    "bidirectional" (q(z_t | x_{1:T}): a second GRU of encoder_hidden units reads the
    sequence from its last valid step back to t, and both read unseen entries as the
    linear interpolation of their seen neighbours), which lets a missing x_t be
    inferred from the entries after it."""

    model_name = "STORN"

    encoder: str = "filtering"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice("encoder", self.encoder, dict.fromkeys(ENCODERS))


class STORN(PathModel):
    """STORN. Args: config: :class:`STORNConfig`; data_dim: D; input_dim: U (0: none)."""

    Config = STORNConfig

    def __init__(self, config: STORNConfig, data_dim: int, input_dim: int = 0) -> None:
        super().__init__()
        check_dims(data_dim, input_dim)
        c = self.config = config
        Z, H, D, U = c.latent_dim, c.hidden_size, data_dim, input_dim
        self.data_dim, self.input_dim = D, U
        # frames reach the encoder (x_t) and the decoder recurrence (x_{t-1}) through
        # their own frame models: [x filled, mask, u] or [x filled, mask] -> features
        self.encoder_frames, width = frame_input(c, D, U)
        self.encoder_rnn = nn.GRU(width, c.encoder_hidden, batch_first=True)
        self.backward_rnn = nn.GRU(width, c.encoder_hidden, batch_first=True) \
            if c.encoder == "bidirectional" else None
        self.encoder_head = GaussianMLP(c.encoder_hidden * (1 + (self.backward_rnn is not None)),
                                        c.mlp_hidden, Z, c.min_var)
        self.previous_frames, width = frame_input(c, D, 0)
        self.decoder_rnn = nn.GRU(width + Z + U, H, batch_first=True)
        self.emission_trunk, width = trunk(H, c.mlp_hidden)
        self.observation = observation_model(c, width, D, c.free_emission_variance)
        self.feedback = FEEDBACKS[c.generation_feedback]

    def posterior(self, batch: SequenceBatch) -> tuple[Tensor, Tensor]:
        """q(z_t | x_{1:t}, u_{1:t}) (filtering) or q(z_t | x_{1:T}, u_{1:T})
        (bidirectional): mean, var (B, T, Z) of a prepared batch."""
        if self.backward_rnn is None:
            features = self.encoder_frames(observation_features(batch, fill="carry"))
            return self.encoder_head(run_gru(self.encoder_rnn, features))     # (B, T, Z)
        features = self.encoder_frames(observation_features(batch, fill="steps"))
        back = reverse_padded(run_gru(self.backward_rnn, reverse_padded(features,
                                                                      batch.lengths)),
                              batch.lengths)                                  # (B, T, G)
        return self.encoder_head(torch.cat([run_gru(self.encoder_rnn, features), back], -1))

    def draw_paths(self, batch: SequenceBatch, n_samples: int) -> PathTerms:
        K, (B, T) = n_samples, batch.x.shape[:2]
        q_mean, q_var = self.posterior(batch)                                  # (B, T, Z)
        z = q_mean + q_var.sqrt() * stepwise_normal(K, B, T, q_mean.shape[-1], q_mean)
        seen = encoder_mask(batch, self.config.hide_from_recurrence, self.training)
        previous = self.previous_frames(previous_observations(batch, seen))   # (B, T, F)
        previous = previous.expand(K, -1, -1, -1)                              # (K, B, T, F)
        inputs = with_input(torch.cat([previous, z], -1), batch.u)
        h = run_gru(self.decoder_rnn, inputs.reshape(K * B, T, -1)).reshape(K, B, T, -1)
        params = self.observation(self.emission_trunk(h))                      # (K, B, T, D)
        log_lik = self.observation.log_prob(batch.x, params, batch.mask).sum((-1, -2))
        prior_mean = torch.zeros_like(z)
        kl_dims, log_ratio = latent_terms(z, q_mean.expand_as(z), q_var.expand_as(z),
                                          prior_mean, torch.ones_like(z), batch.valid)
        return PathTerms(z, log_lik, kl_dims.sum(-1), log_ratio, params, (h,), kl_dims)

    def start_after(self, paths: PathTerms, batch: SequenceBatch) -> tuple[Tensor, ...]:
        K = paths.z.shape[0]
        h = last_valid(paths.state[0], batch.lengths)                          # (K, B, H)
        return h.reshape(-1, h.shape[-1]), repeat_samples(last_observation(batch), K)

    def initial_state(self, n: int) -> tuple[Tensor, ...]:
        like = self.like
        return like.new_zeros(n, self.config.hidden_size), like.new_zeros(n, 2 * self.data_dim)

    def generate(self, state: tuple[Tensor, ...], steps: int, u: Tensor | None
                 ) -> tuple[tuple[Tensor, ...], Tensor]:
        h, previous = state                                                    # (N, H), (N, 2D)
        params_seq, draws = [], []
        for j in range(steps):
            z = torch.randn((h.shape[0], self.config.latent_dim), dtype=h.dtype,
                            device=h.device)                                    # z_t ~ N(0, I)
            inputs = with_input(torch.cat([self.previous_frames(previous), z], -1),
                                None if u is None else u[:, j])
            h = step_gru(self.decoder_rnn, inputs, h)
            params = self.observation(self.emission_trunk(h))
            draw = self.observation.sample(params)
            previous = fed_back(self.feedback(self.observation.moments(params)[0], draw))
            params_seq.append(params)
            draws.append(draw)
        return stack_steps(params_seq), torch.stack(draws, 1)

