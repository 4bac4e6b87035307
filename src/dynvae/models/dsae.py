"""DSAE, the disentangled sequential autoencoder (Li & Mandt 2018): a static latent v for
the whole sequence plus dynamic latents z_t, under the dynvae model contract.

Generative model: seed eq. 11 with a global latent v that every x_t depends on, a
recurrence over the latents for p(z_t | z_{1:t-1}) and x_t independent of x_{1:t-1}
given (z_t, v) (steps t = 1..T; 0-indexed in the code):
    v ~ p(v) = N(0, I)
    g_t = GRU([z_{t-1}, u_t], g_{t-1})                           (g_0 = 0, z_0 = 0)
    z_t ~ p(z_t | z_{1:t-1}, u_{1:t}) = N(mu(g_t), diag sigma^2(g_t))
    x_t ~ p(x_t | z_t, v, u_t)                                     (Gaussian or Bernoulli)
    p(x_{1:T}, z_{1:T}, v) = p(v) prod_t p(x_t | z_t, v, u_t) p(z_t | z_{1:t-1}, u_{1:t})
Inference: the "full" q of Li & Mandt (2018), seed eq. 12 extended by v,
    q(v | x_{1:T}) = N(mu(c), diag sigma^2(c)), c = [forward GRU state at the last valid
        step, backward GRU state at the first step] over x
    q(z_{1:T} | x_{1:T}, v) = prod_t q(z_t | x_{1:T}, v) = N(mu(b_t), diag sigma^2(b_t)),
        b_t a bidirectional GRU over [x_t, v]
The z_t are independent given (x, v) under q, whereas the true posterior couples z_t
to z_{t-1} (an approximation of Li & Mandt's). ELBO (seed eq. 13 plus the static term):
    sum_t E_q log p(x_t | z_t, v) - KL(q(v | x) || p(v))
        - sum_t E_q KL(q(z_t | x, v) || p(z_t | z_{1:t-1}))
with every KL closed-form (the dynamic ones at the drawn z_{1:t-1}). Missing entries
reach the encoders (both read the whole sequence) as [x, mask] with x filled by linear
interpolation between the seen values. Forecasts and samples keep v fixed along a path.
One step per grid point; padding beyond ``lengths`` is excluded from every term.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from dynvae.data.batch import SequenceBatch
from dynvae.gaussian import diag_gaussian_log_prob, kl_diag_gaussians
from dynvae.models.base import PathModel, PathTerms
from dynvae.models.common import (
    check_dims,
    check_positive,
    last_valid,
    latent_terms,
    observation_features,
    repeat_samples,
    stack_steps,
    stepwise_normal,
)
from dynvae.models.frames import frame_input, observation_model
from dynvae.models.path_config import PathConfig
from dynvae.nn.mlp import GaussianHead, GaussianMLP, trunk
from dynvae.nn.recurrent import SequenceSummary, run_gru, step_gru
from dynvae.nn.transition import with_input


@dataclass
class DSAEConfig(PathConfig):
    """Configuration of :class:`DSAE`. latent_dim: dynamic z_t; static_dim: static v;
    hidden_size: the prior GRU g_t; encoder_hidden: each direction of the encoder GRUs;
    mlp_hidden: hidden layers of the encoder heads and the emission (empty: affine);
    observation: "gaussian" or "bernoulli"."""

    model_name = "DSAE"

    static_dim: int = 8

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive(static_dim=self.static_dim)


class DSAE(PathModel):
    """DSAE. Args: config: :class:`DSAEConfig`; data_dim: D; input_dim: U (0: none)."""

    Config = DSAEConfig

    @property
    def latent_plot_note(self) -> str:
        """Said in the title of a run's latents.png, which draws the paths z_t only."""
        return (f"the dynamic z_t; the {self.config.static_dim} static latents v (one per "
                "sequence) are not drawn")

    def __init__(self, config: DSAEConfig, data_dim: int, input_dim: int = 0) -> None:
        super().__init__()
        check_dims(data_dim, input_dim)
        c = self.config = config
        Z, V, E, D, U = c.latent_dim, c.static_dim, c.encoder_hidden, data_dim, input_dim
        self.data_dim, self.input_dim = D, U
        # one frame model feeds both encoders: [x filled, mask, u] -> features
        self.frame_input, width = frame_input(c, D, U)
        self.static_summary = SequenceSummary(width, E, "bidirectional")
        self.static_head = GaussianMLP(2 * E, c.mlp_hidden, V, c.min_var)
        self.dynamic_summary = SequenceSummary(width + V, E, "bidirectional")
        self.dynamic_head = GaussianMLP(2 * E, c.mlp_hidden, Z, c.min_var)
        self.prior_rnn = nn.GRU(Z + U, c.hidden_size, batch_first=True)
        self.prior_head = GaussianHead(c.hidden_size, Z, c.min_var)
        self.emission_trunk, width = trunk(Z + V + U, c.mlp_hidden)
        self.observation = observation_model(c, width, D, c.free_emission_variance)

    def encoder_features(self, batch: SequenceBatch) -> Tensor:
        """(B, T, F) what both encoders read of a prepared batch: [x filled, mask, u]
        through the frame model."""
        return self.frame_input(observation_features(batch, fill="steps"))

    def static_posterior(self, batch: SequenceBatch, features: Tensor | None = None
                         ) -> tuple[Tensor, Tensor]:
        """q(v | x_{1:T}) of a prepared batch: mean, var (B, V). ``features``: its
        :meth:`encoder_features`, if already computed."""
        E = self.config.encoder_hidden
        features = self.encoder_features(batch) if features is None else features
        c = self.static_summary(features, batch.lengths)                      # (B, T, 2E)
        ends = torch.cat([last_valid(c[..., :E], batch.lengths), c[:, 0, E:]], -1)
        return self.static_head(ends)

    def emission(self, z: Tensor, v: Tensor, u: Tensor | None) -> tuple[Tensor, ...]:
        """Parameters of p(x_t | z_t, v, u_t): z (…, Z), v (…, V), u (…, U) -> each (…, D)."""
        return self.observation(self.emission_trunk(with_input(torch.cat([z, v], -1), u)))

    def kl_dim_labels(self, n: int) -> list[str]:
        """z[i] for the dynamic dimensions, then v[j] for the static ones (kl_dims' order)."""
        Z = self.config.latent_dim
        return [f"z[{i}]" if i < Z else f"v[{i - Z}]" for i in range(n)]

    def draw_paths(self, batch: SequenceBatch, n_samples: int) -> PathTerms:
        K, (B, T), Z = n_samples, batch.x.shape[:2], self.config.latent_dim
        x_features = self.encoder_features(batch)                              # (B, T, F)
        v_mean, v_var = self.static_posterior(batch, x_features)               # (B, V)
        v = v_mean + v_var.sqrt() * torch.randn((K, *v_mean.shape), dtype=v_mean.dtype,
                                                device=v_mean.device)         # (K, B, V)
        v_steps = v[:, :, None].expand(-1, -1, T, -1)                          # (K, B, T, V)
        features = torch.cat([x_features.expand(K, -1, -1, -1), v_steps], -1)
        b = self.dynamic_summary(features.reshape(K * B, T, -1),
                                 repeat_samples(batch.lengths, K))
        q_mean, q_var = (m.reshape(K, B, T, Z) for m in self.dynamic_head(b))
        z = q_mean + q_var.sqrt() * stepwise_normal(K, B, T, Z, q_mean)        # (K, B, T, Z)
        z_prev = torch.cat([torch.zeros_like(z[:, :, :1]), z[:, :, :-1]], 2)
        g = run_gru(self.prior_rnn, with_input(z_prev, batch.u).reshape(K * B, T, -1))
        g = g.reshape(K, B, T, -1)
        p_mean, p_var = self.prior_head(g)
        params = self.emission(z, v_steps, batch.u)                            # (K, B, T, D)
        log_lik = self.observation.log_prob(batch.x, params, batch.mask).sum((-1, -2))
        kl_dims, log_ratio = latent_terms(z, q_mean, q_var, p_mean, p_var, batch.valid)
        zero, one = torch.zeros_like(v), torch.ones_like(v)
        kl_dims = torch.cat([kl_dims, kl_diag_gaussians(v_mean, v_var, zero, one)], -1)
        log_ratio = log_ratio + (diag_gaussian_log_prob(v, zero, one)
                                 - diag_gaussian_log_prob(v, v_mean, v_var)).sum(-1)
        return PathTerms(z, log_lik, kl_dims.sum(-1), log_ratio, params, (g, v), kl_dims)

    def start_after(self, paths: PathTerms, batch: SequenceBatch) -> tuple[Tensor, ...]:
        g, v = paths.state                                        # (K, B, T, G), (K, B, V)
        g, z = (last_valid(s, batch.lengths) for s in (g, paths.z))            # (K, B, ·)
        return tuple(s.reshape(-1, s.shape[-1]) for s in (g, z, v))

    def initial_state(self, n: int) -> tuple[Tensor, ...]:
        c, like = self.config, self.like
        v = torch.randn((n, c.static_dim), dtype=like.dtype, device=like.device)  # v ~ p(v)
        return like.new_zeros(n, c.hidden_size), like.new_zeros(n, c.latent_dim), v

    def generate(self, state: tuple[Tensor, ...], steps: int, u: Tensor | None
                 ) -> tuple[tuple[Tensor, ...], Tensor]:
        g, z, v = state                                            # (N, G), (N, Z), (N, V)
        params_seq, draws = [], []
        for j in range(steps):
            u_j = None if u is None else u[:, j]
            g = step_gru(self.prior_rnn, with_input(z, u_j), g)
            p_mean, p_var = self.prior_head(g)
            z = p_mean + p_var.sqrt() * torch.randn_like(p_mean)
            params = self.emission(z, v, u_j)
            params_seq.append(params)
            draws.append(self.observation.sample(params))
        return stack_steps(params_seq), torch.stack(draws, 1)
