"""GP-VAE: a VAE whose latent channels are Gaussian processes in time (Fortuin et al. 2020),
with the GP prior and the KL computed in O(T) by state-space kernels (docs/models.md).

Generative model of a sequence with (irregular) times t_0 < ... < t_{T-1}:
    z_c(.) ~ GP(0, k_c), c = 1..Z, independent    (state-space kernel: z_c = H s_c)
    x_t ~ p(x_t | z_t, u_t)                        (MLP decoder: Gaussian or Bernoulli)
Inference: an encoder maps each step's (x_t zero-filled, mask_t, u_t) to a Gaussian site
(y~_t, v~_t) per channel, and q(s) = p(s) prod_t N(y~_t | H s_t, v~_t) / p(y~) (Fortuin et
al. 2020, with the sites in place of their banded precision). Steps with no observed
entry and padding carry no site. KL(q || p), draws from q and the importance weights are
exact and O(T) through the Kalman filter and smoother (dynvae.gp.sites):
    ELBO = E_q[log p(x | z)] - KL(q || p),  KL in closed form, E_q by FFBS draws;
    log w = log p(x | z) - sum_t log N(y~_t | z_t, v~_t) + log p(y~),  z ~ q.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from dynvae.data.batch import SequenceBatch
from dynvae.errors import ConfigError
from dynvae.gp import sites as gp_sites
from dynvae.gp.inference import AutoKalman, ParallelKalman, ScalarKalman, SequentialKalman
from dynvae.gp.kernels import Kernel, KernelInit, parse_kernel
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
    mixture_moments,
    observation_features,
    prepare_batch,
    resolved_free_variance,
)
from dynvae.models.frames import FrameOptions, frame_input, observation_model
from dynvae.nn.mlp import trunk
from dynvae.nn.observation import OBSERVATIONS
from dynvae.nn.site_encoder import SITE_ENCODERS, SiteEncoder
from dynvae.nn.transition import with_input

# Kalman engines whose means and covariances carry exact gradients (the KL needs them);
# "auto" runs the parallel scan when gradients flow and the C back end when none do
GRADIENT_ENGINES = {"scalar": ScalarKalman, "auto": AutoKalman,
                    "sequential": SequentialKalman, "parallel": ParallelKalman}


@dataclass
class GPVAEConfig(FrameOptions, DictConfig):
    """Configuration of :class:`GPVAE`.

    kernel: a kernel spec for dynvae.gp.kernels.parse_kernel ("matern32", "matern52",
    "matern12", "periodic", sums and products such as "matern32+periodic"); every latent
    channel gets its own copy, with initial ``lengthscale``, ``period`` and
    ``kernel_variance``. learn_kernel: train the kernel hyperparameters other than the
    variance; learn_kernel_variance: train the variance too (the decoder can absorb the
    latent scale, so it is fixed by default). engine: "scalar" (the default: the engine
    for one observed dim per channel, dynvae.ssm.scalar), "auto" (the associative scan
    while training, the C back end when no gradient is needed), "sequential" or
    "parallel" Kalman. observation: "gaussian" or "bernoulli". free_emission_variance:
    for the Gaussian observation, True (the default, None) learns one std per data
    dimension, False makes the std a function of z. Empty hidden sizes make a map affine.
    site_encoder: "conv" (a temporal convolution: each step's sites read its neighbours)
    or "mlp" (each step alone), see ``dynvae.nn.site_encoder``. hide_from_encoder: share
    of the observed entries hidden from the encoder at random while training (still
    scored; ``dynvae.models.common.encoder_mask``). frame_encoder, frame_decoder: "conv"
    for convolutional frame models on image data (dynvae.models.frames).
    """

    model_name = "GP-VAE"

    latent_dim: int = 8
    kernel: str = "matern32"
    lengthscale: float = 2.0
    period: float = 1.0
    kernel_variance: float = 1.0
    learn_kernel: bool = True
    learn_kernel_variance: bool = False
    engine: str = "scalar"
    observation: str = "gaussian"
    encoder_hidden: tuple[int, ...] = (64, 64)
    emission_hidden: tuple[int, ...] = (64, 64)
    free_emission_variance: bool | None = None
    min_var: float = 1e-4
    n_predict_samples: int = 64
    site_encoder: str = "conv"
    hide_from_encoder: float = 0.0

    def __post_init__(self) -> None:
        check_choice("engine", self.engine, GRADIENT_ENGINES)
        check_choice("site_encoder", self.site_encoder, SITE_ENCODERS)
        check_hide_rate(self.hide_from_encoder)
        self.check_frames()
        check_choice("observation", self.observation, OBSERVATIONS)
        self.encoder_hidden = as_sizes("encoder_hidden", self.encoder_hidden)
        self.emission_hidden = as_sizes("emission_hidden", self.emission_hidden)
        check_positive(latent_dim=self.latent_dim, lengthscale=self.lengthscale,
                       period=self.period, kernel_variance=self.kernel_variance,
                       n_predict_samples=self.n_predict_samples)
        check_observation(self.observation, bool(self.free_emission_variance), self.min_var)


def channel_kernels(config: GPVAEConfig, kernel: Kernel | None = None) -> nn.ModuleList:
    """Z independent copies of the prior kernel (a given Kernel object, or config.kernel),
    with hyperparameters frozen as the config says."""
    if kernel is None:
        kernel = parse_kernel(config.kernel, KernelInit(
            lengthscale=config.lengthscale, period=config.period,
            variance=config.kernel_variance))
    if not isinstance(kernel, Kernel):
        raise ConfigError(f"kernel must be a dynvae.gp.kernels.Kernel, got "
                          f"{type(kernel).__name__}")
    kernels = nn.ModuleList([copy.deepcopy(kernel) for _ in range(config.latent_dim)])
    for name, p in kernels.named_parameters():
        learn = config.learn_kernel_variance if name.endswith("log_variance") \
            else config.learn_kernel
        p.requires_grad_(learn)
    return kernels


class GPVAE(DVAE):
    """GP-VAE with state-space GP channels, on irregular times, with missing values.

    Args: config: :class:`GPVAEConfig`. data_dim: D. input_dim: U (0 for no inputs; inputs
    enter the encoder and the decoder). kernel: optional Kernel object (a strategy object
    from dynvae.gp.kernels) that replaces ``config.kernel``. encoder: optional SiteEncoder
    that replaces the default MLP (features (B, T, 2D + U) -> sites (B, T, Z)).
    """

    Config = GPVAEConfig
    continuous_time = True

    def __init__(self, config: GPVAEConfig, data_dim: int, input_dim: int = 0,
                 kernel: Kernel | None = None, encoder: SiteEncoder | None = None) -> None:
        super().__init__()
        check_dims(data_dim, input_dim)
        c = self.config = config
        Z, D, U = c.latent_dim, data_dim, input_dim
        self.data_dim, self.input_dim = D, U
        self.kernels = channel_kernels(c, kernel)
        gp_sites.check_kernels(list(self.kernels))
        self.engine = GRADIENT_ENGINES[c.engine]()
        self.frame_input, width = frame_input(c, D, U)        # [x * mask, mask, u] -> encoder
        self.encoder = encoder if encoder is not None else SITE_ENCODERS[c.site_encoder](
            width, Z, c.encoder_hidden, c.min_var)
        if not isinstance(self.encoder, SiteEncoder) or self.encoder.latent_dim != Z:
            raise ConfigError(f"encoder must be a SiteEncoder with latent_dim {Z}")
        self.emission_trunk, width = trunk(Z + U, c.emission_hidden)
        free = resolved_free_variance(c.observation, c.free_emission_variance)
        self.observation = observation_model(c, width, D, free)
        self.kernels.to(next(self.observation.parameters()).dtype)   # one dtype throughout

    # ------------------------------------------------------------ building blocks
    def _prepare(self, batch: SequenceBatch) -> SequenceBatch:
        like = next(self.observation.parameters())
        batch = prepare_batch(batch, self.data_dim, self.input_dim, like)
        self.observation.check_data(batch.x, batch.mask)
        return batch

    def sites(self, batch: SequenceBatch) -> gp_sites.Sites:
        """The encoder's sites; a step carries one where the encoder sees an entry."""
        seen = encoder_mask(batch, self.config.hide_from_encoder, self.training)
        features = self.frame_input(observation_features(batch, seen, "time"))
        mean, var = self.encoder(features)                                        # (B, T, Z)
        return gp_sites.Sites(mean, var, seen.any(-1))

    def posterior(self, batch: SequenceBatch) -> tuple[gp_sites.Sites, gp_sites.SitePosterior]:
        """Sites and q(s) of a prepared batch (filter + smoother over each own time grid)."""
        s = self.sites(batch)
        return s, gp_sites.site_posterior(list(self.kernels), batch.t, batch.valid, s,
                                          self.engine)

    def emission(self, z: Tensor, u: Tensor | None = None) -> tuple[Tensor, ...]:
        """Parameters of p(x_t | z_t, u_t): z (…, T, Z), u (…, T, U) -> each (…, T, D)."""
        return self.observation(self.emission_trunk(with_input(z, u)))

    def path_terms(self, batch: SequenceBatch, n_samples: int
                   ) -> tuple[Tensor, Tensor, Tensor]:
        """log p(x | z^k) (K, B) at K FFBS draws z^k ~ q, the closed-form KL (B,) and
        log p(z^k) - log q(z^k) (K, B)."""
        batch = self._prepare(batch)
        s, post = self.posterior(batch)
        z = gp_sites.sample_paths(post, s, n_samples)                    # (K, B, T, Z)
        params = self.emission(z, batch.u)
        log_lik = self.observation.log_prob(batch.x, params, self.scored_mask(batch))
        log_ratio = post.log_marginal - gp_sites.site_log_lik(z, s)      # (K, B)
        return log_lik.sum((-1, -2)), gp_sites.kl_to_prior(post, s), log_ratio

    # ------------------------------------------------------------------ contract
    def elbo(self, batch: SequenceBatch, n_samples: int = 1) -> ELBOTerms:
        """E_q[log p(x | z)] and the exact KL. Each entry depends on one z_t only, so the
        expectation needs draws from the marginals q(z_t) alone (``n_samples`` of them,
        reparametrised), not joint paths."""
        check_positive(n_samples=n_samples)
        batch = self._prepare(batch)
        s, post = self.posterior(batch)
        z = gp_sites.sample_marginals(post, n_samples)                   # (K, B, T, Z)
        scored = self.scored_mask(batch)
        log_lik = self.observation.log_prob(batch.x, self.emission(z, batch.u), scored)
        kl_dims = gp_sites.kl_to_prior_per_channel(post, s)              # (B, Z)
        return ELBOTerms(log_lik.sum((-1, -2)).mean(0), kl_dims.sum(-1),
                         scored.sum((1, 2)).to(log_lik), kl_dims)

    @torch.no_grad()
    def log_likelihood_bound(self, batch: SequenceBatch, k: int) -> Tensor:
        """IWAE bound log (1/k) sum_k p(x, s^k) / q(s^k), (B,); every weight is exact and O(T)."""
        def log_weights(n: int) -> Tensor:
            log_lik, _, log_ratio = self.path_terms(batch, n)
            return log_lik + log_ratio
        return iwae_bound(log_weights, k)

    def _predictive(self, post: gp_sites.SitePosterior, u: Tensor | None
                    ) -> tuple[Tensor, Tensor]:
        """Per-entry predictive mean and std (…, T, D): Monte Carlo over the marginals of q
        (each entry depends on one z_t only), law of total variance."""
        z = gp_sites.sample_marginals(post, self.config.n_predict_samples)
        return mixture_moments(*self.observation.moments(self.emission(z, u)))

    @torch.no_grad()
    def reconstruct(self, batch: SequenceBatch) -> Prediction:
        """Posterior predictive mean and std of every entry (imputation)."""
        batch = self._prepare(batch)
        _, post = self.posterior(batch)
        return Prediction(batch.t, *self._predictive(post, batch.u))

    @torch.no_grad()
    def forecast(self, batch: SequenceBatch, t_future: Tensor,
                 u_future: Tensor | None = None) -> Prediction:
        """Predictive mean/std at ``t_future`` (B, H) after each sequence's last valid step:
        the times join each sequence's grid as steps without sites, so the smoother
        predicts there from all the data. ``u_future`` (B, H, U) if the model takes inputs."""
        batch = self._prepare(batch)
        check_future(batch, t_future, u_future, self.input_dim)
        s = self.sites(batch)
        t, steps, rows, s = extend_grid(batch.t, batch.lengths, t_future.to(batch.t), s)
        post = gp_sites.site_posterior(list(self.kernels), t, steps, s, self.engine)
        Z = self.config.latent_dim
        at = lambda v: v.gather(1, rows[..., None].expand(-1, -1, Z))     # (B, H, Z)
        future = post._replace(mean=at(post.mean), var=at(post.var))
        u = None if u_future is None else u_future.to(batch.t)
        return Prediction(t_future, *self._predictive(future, u))

    @torch.no_grad()
    def sample(self, n: int, t: Tensor, u: Tensor | None = None) -> Tensor:
        """(n, T, D) draws at times ``t`` (T,): GP prior paths (FFBS with no sites), decoded;
        ``u`` (T, U) or (n, T, U) if the model takes inputs."""
        T = check_sample_times(t, u, self.input_dim, n)
        like = next(self.observation.parameters())
        t = t.to(like)
        Z = self.config.latent_dim
        grid = t.expand(n, T)
        none = gp_sites.Sites(like.new_zeros(n, T, Z), like.new_ones(n, T, Z),
                              torch.zeros(n, T, dtype=torch.bool, device=like.device))
        steps = torch.ones(n, T, dtype=torch.bool, device=like.device)
        prior = gp_sites.site_posterior(list(self.kernels), grid, steps, none, self.engine)
        z = gp_sites.sample_paths(prior, none, 1)[0]                       # (n, T, Z)
        u = None if u is None else u.to(like).expand(n, T, self.input_dim)
        return self.observation.sample(self.emission(z, u))


def extend_grid(t: Tensor, lengths: Tensor, t_future: Tensor, s: gp_sites.Sites
                ) -> tuple[Tensor, Tensor, Tensor, gp_sites.Sites]:
    """Append H future times after each sequence's last valid step.

    Args: t (B, T), lengths (B,), t_future (B, H), sites on the (B, T) grid.
    Returns: times (B, T+H), grid steps (B, T+H) bool, rows (B, H) of the future times,
    and the sites padded with steps that carry none.
    """
    B, H = t_future.shape
    rows = lengths.to(t.device)[:, None] + torch.arange(H, device=t.device)   # (B, H)
    times = torch.cat([t, t.new_zeros(B, H)], 1).scatter(1, rows, t_future)
    steps = torch.arange(times.shape[1], device=t.device)[None] < rows[:, -1:] + 1
    pad = lambda v, fill: torch.cat([v, v.new_full((B, H, *v.shape[2:]), fill)], 1)
    return times, steps, rows, gp_sites.Sites(pad(s.mean, 0.0), pad(s.var, 1.0),
                                              pad(s.mask, False))
