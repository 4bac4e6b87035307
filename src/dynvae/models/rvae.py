"""RVAE, the recurrent variational autoencoder (Leglaive et al. 2020), with a causal or a
non-causal encoder, under the dynvae model contract.

Generative model: seed eq. 11 with i.i.d. latents and p(x_t | x_{1:t-1}, z_{1:t}) =
p(x_t | z_{1:t}) carried by a forward recurrence over the latents (steps t = 1..T;
0-indexed in the code):
    z_t ~ p(z_t) = N(0, I)
    h_t = GRU([z_t, u_t], h_{t-1})                               (h_0 = 0)
    x_t ~ p(x_t | z_{1:t}, u_{1:t}) = p(x_t | h_t)                (Gaussian or Bernoulli)
Inference: seed eq. 12. Given z_{1:t-1}, x_{1:t-1} is independent of z_t (D-separation),
so the true posterior factor is p(z_t | z_{1:t-1}, x_{t:T}). With s_t = GRU(z_{t-1},
s_{t-1}) (s_1 = 0) summarising the drawn z_{1:t-1}, and g_t a GRU summary of x:
    encoder="non-causal": q(z_t | z_{1:t-1}, x_{t:T}), g_t read backward over x_{t:T}: the
        dependencies of the true posterior (Leglaive et al. 2020)
    encoder="causal":     q(z_t | z_{1:t-1}, x_{1:t}), g_t read forward over x_{1:t}: no
        future observation, so inference runs online (an approximation of the posterior)
    q(z_t | ·) = N(mu([g_t, s_t]), diag sigma^2([g_t, s_t]))
ELBO (seed eq. 13): closed-form KL(q(z_t | ·) || N(0, I)) at the drawn z_{1:t-1}. Missing
entries reach the encoder as [x, mask] with x filled by linear interpolation between the
seen values (non-causal encoder) or carried forward from the last seen one (causal: 0
before it); the decoder never reads x, so generation
needs no feedback. One step per grid point; padding beyond ``lengths`` is excluded.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from dynvae.data.batch import SequenceBatch
from dynvae.models.base import PathModel, PathTerms
from dynvae.models.common import (
    check_choice,
    check_dims,
    last_valid,
    latent_terms,
    observation_features,
    stack_steps,
)
from dynvae.models.frames import frame_input, observation_model
from dynvae.models.path_config import PathConfig
from dynvae.nn.loops import gaussian_net_steps
from dynvae.nn.mlp import GaussianMLP, trunk
from dynvae.nn.recurrent import SequenceSummary, run_gru, step_gru
from dynvae.nn.transition import with_input

# encoder -> the direction in which its GRU reads x (what step t may see)
ENCODER_DIRECTIONS = {
    "non-causal": "backward",     # x_{t:T}: the true posterior's dependencies
    "causal": "forward",          # x_{1:t}: online inference
}


@dataclass
class RVAEConfig(PathConfig):
    """Configuration of :class:`RVAE`. encoder: "non-causal" or "causal" (see the module
    docstring); hidden_size: the decoder GRU h_t; encoder_hidden: the encoder GRUs g_t
    and s_t; mlp_hidden: hidden layers of the encoder head and the emission (empty:
    affine); observation: "gaussian" or "bernoulli"."""

    model_name = "RVAE"

    encoder: str = "non-causal"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice("encoder", self.encoder, ENCODER_DIRECTIONS)


class RVAE(PathModel):
    """RVAE. Args: config: :class:`RVAEConfig`; data_dim: D; input_dim: U (0: none)."""

    Config = RVAEConfig

    def __init__(self, config: RVAEConfig, data_dim: int, input_dim: int = 0) -> None:
        super().__init__()
        check_dims(data_dim, input_dim)
        c = self.config = config
        Z, H, E, D, U = c.latent_dim, c.hidden_size, c.encoder_hidden, data_dim, input_dim
        self.data_dim, self.input_dim = D, U
        self.frame_input, width = frame_input(c, D, U)      # [x filled, mask, u] -> encoder
        self.observation_summary = SequenceSummary(width, E, ENCODER_DIRECTIONS[c.encoder])
        self.latent_rnn = nn.GRU(Z, E, batch_first=True)
        self.encoder_head = GaussianMLP(self.observation_summary.out_features + E,
                                        c.mlp_hidden, Z, c.min_var)
        self.decoder_rnn = nn.GRU(Z + U, H, batch_first=True)
        self.emission_trunk, width = trunk(H, c.mlp_hidden)
        self.observation = observation_model(c, width, D, c.free_emission_variance)

    def draw_paths(self, batch: SequenceBatch, n_samples: int) -> PathTerms:
        K, (B, T), Z = n_samples, batch.x.shape[:2], self.config.latent_dim
        # unseen entries: linear interpolation for the encoder that reads x_{t:T} anyway,
        # the last seen value for the causal one (which must not look ahead)
        fill = "carry" if self.config.encoder == "causal" else "steps"
        features = self.frame_input(observation_features(batch, fill=fill))    # (B, T, F + U)
        g = self.observation_summary(features, batch.lengths)                  # (B, T, C)
        s = g.new_zeros(K * B, self.config.encoder_hidden)       # summary of z_{1:t-1}
        # the encoder's product with g_t is made once per sequence for all steps
        # (dynvae.nn.loops), on rows k B + b (sample k of sequence b)
        encoder = gaussian_net_steps(self.encoder_head, self.config.encoder_hidden, g, K,
                                     state_first=False)
        zs, means, variances = [], [], []
        for t in range(T):
            q_mean, q_var = encoder(t, s)                                      # (K*B, Z)
            eps = torch.randn((K, B, Z), dtype=g.dtype, device=g.device).reshape(K * B, Z)
            z = torch.addcmul(q_mean, q_var.sqrt(), eps)
            if t + 1 < T:
                s = step_gru(self.latent_rnn, z, s)
            zs.append(z)
            means.append(q_mean)
            variances.append(q_var)
        z, q_mean, q_var = (torch.stack(v, 1).reshape(K, B, T, Z) for v in (zs, means,
                                                                              variances))
        h = run_gru(self.decoder_rnn, with_input(z, batch.u).reshape(K * B, T, -1))
        h = h.reshape(K, B, T, -1)
        params = self.observation(self.emission_trunk(h))                      # (K, B, T, D)
        log_lik = self.observation.log_prob(batch.x, params, batch.mask).sum((-1, -2))
        kl_dims, log_ratio = latent_terms(z, q_mean, q_var, torch.zeros_like(z),
                                          torch.ones_like(z), batch.valid)
        return PathTerms(z, log_lik, kl_dims.sum(-1), log_ratio, params, (h,), kl_dims)

    def start_after(self, paths: PathTerms, batch: SequenceBatch) -> tuple[Tensor, ...]:
        h = last_valid(paths.state[0], batch.lengths)                          # (K, B, H)
        return (h.reshape(-1, h.shape[-1]),)

    def initial_state(self, n: int) -> tuple[Tensor, ...]:
        return (self.like.new_zeros(n, self.config.hidden_size),)

    def generate(self, state: tuple[Tensor, ...], steps: int, u: Tensor | None
                 ) -> tuple[tuple[Tensor, ...], Tensor]:
        (h,) = state                                                           # (N, H)
        params_seq, draws = [], []
        for j in range(steps):
            z = torch.randn((h.shape[0], self.config.latent_dim), dtype=h.dtype,
                            device=h.device)                                    # z_t ~ N(0, I)
            h = step_gru(self.decoder_rnn, with_input(z, None if u is None else u[:, j]), h)
            params = self.observation(self.emission_trunk(h))
            params_seq.append(params)
            draws.append(self.observation.sample(params))
        return stack_steps(params_seq), torch.stack(draws, 1)
