"""Latent ODE: a linear model whose posterior is exact (every importance weight equals
log p(x)), the ELBO gap against the closed-form KL, forecasts at any future time,
per-sequence irregular grids equal to each sequence solved alone, and what the ODE-RNN
encoder reads."""

import math

import pytest
import torch
from torch.distributions import MultivariateNormal

from dynvae.data.batch import SequenceBatch
from dynvae.errors import ConfigError
from dynvae.models.latent_ode import LatentODE, LatentODEConfig

F64 = torch.float64
D = 2
W, BIAS = -0.7, 0.3                         # dz/dt = W z + BIAS
C, OFFSET, NOISE = torch.tensor([1.5, -0.8]), torch.tensor([0.2, -0.1]), torch.tensor([0.3, 0.5])


def irregular_batch(seed: int = 0) -> SequenceBatch:
    """Three sequences of lengths 6, 4, 5 on their own irregular times, ~25% missing."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([6, 4, 5])
    t = torch.rand(3, 1, generator=g, dtype=F64) + torch.cumsum(
        0.1 + torch.rand(3, 6, generator=g, dtype=F64), 1)
    valid = torch.arange(6)[None] < lengths[:, None]
    mask = (torch.rand(3, 6, D, generator=g) < 0.75) & valid[..., None]
    mask[:, 0] = True
    x = torch.where(mask, torch.randn(3, 6, D, generator=g, dtype=F64), 0.0)
    return SequenceBatch(x, mask, t, lengths)


def linear_model(**overrides) -> LatentODE:
    """Z = 1, affine field and decoder, tight adaptive solver, fixed known parameters."""
    config = LatentODEConfig(latent_dim=1, field_hidden=(), emission_hidden=(), encoder_hidden=4,
                             encoder_field_hidden=(3,), rtol=1e-10, atol=1e-10, **overrides)
    model = LatentODE(config, D).to(F64)
    with torch.no_grad():
        model.field.net[0].weight.fill_(W)
        model.field.net[0].bias.fill_(BIAS)
        head = model.observation.head
        head.mean.weight.copy_(C[:, None])
        head.mean.bias.copy_(OFFSET)
        head.variance.raw.copy_(torch.log(torch.expm1(NOISE ** 2 - config.min_var)))
    return model


def latent_mean_map(t: torch.Tensor, t0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """z(t) = g z0 + h for the linear field: g = e^{W (t - t0)}, h = (BIAS / W)(g - 1)."""
    g = torch.exp(W * (t - t0))
    return g, BIAS / W * (g - 1)


def exact_posterior(batch: SequenceBatch, b: int):
    """log p(x_obs), posterior mean and variance of z0 for sequence b (dense Gaussian)."""
    n = int(batch.lengths[b])
    g, h = latent_mean_map(batch.t[b, :n], batch.t[b, 0])
    m = batch.mask[b, :n]
    gains = (g[:, None] * C.to(F64))[m]                                  # observed entries
    means = (h[:, None] * C.to(F64) + OFFSET.to(F64))[m]
    noise = NOISE.to(F64).pow(2).expand(n, D)[m]
    x = batch.x[b, :n][m]
    log_px = MultivariateNormal(means, gains[:, None] * gains[None] + torch.diag(noise)
                                ).log_prob(x)
    var = 1 / (1 + (gains ** 2 / noise).sum())
    return log_px, var * (gains * (x - means) / noise).sum(), var


class ExactPosteriorODE(LatentODE):
    """The linear model with q(z_0 | x) replaced by the exact posterior."""

    def initial_posterior_of(self, batch):
        moments = [exact_posterior(batch, b)[1:] for b in range(batch.batch_size)]
        return (torch.stack([m for m, _ in moments])[:, None],
                torch.stack([v for _, v in moments])[:, None])


def exact_model() -> ExactPosteriorODE:
    model = linear_model()
    exact = ExactPosteriorODE(model.config, D).to(F64)
    exact.load_state_dict(model.state_dict())
    return exact


def test_with_the_exact_posterior_every_importance_weight_is_log_p_x():
    """log w = log p(x | z) + log p(z_0) - log q(z_0 | x) is log p(x) for every draw, so the
    bound is exact for any k; the ELBO (closed-form KL) is log p(x) in expectation."""
    model, batch = exact_model(), irregular_batch()
    log_px = torch.stack([exact_posterior(batch, b)[0] for b in range(3)])
    for k in (1, 5):
        torch.testing.assert_close(model.log_likelihood_bound(batch, k), log_px, rtol=1e-7,
                                   atol=1e-7)
    torch.manual_seed(0)
    with torch.no_grad():
        draws = torch.stack([model.elbo(batch, 200).elbo() for _ in range(10)])
    se = draws.std(0) / math.sqrt(10)
    assert bool(((draws.mean(0) - log_px).abs() < 5 * se + 1e-9).all())


def test_the_elbo_gap_is_the_kl_to_the_exact_posterior():
    """E_q[ELBO] = log p(x) - KL(q || p(z_0 | x)) for the network's own q (1-d Gaussians)."""
    model, batch = linear_model(), irregular_batch(1)
    torch.manual_seed(0)
    with torch.no_grad():
        q_mean, q_var = model.initial_posterior_of(model._prepare(batch))
        elbo = model.elbo(batch, n_samples=4000)
        se = torch.stack([model.elbo(batch, 500).elbo() for _ in range(8)]).std(0) / math.sqrt(8)
    for b in range(3):
        log_px, mean, var = exact_posterior(batch, b)
        kl = 0.5 * (torch.log(var / q_var[b, 0]) + (q_var[b, 0] + (q_mean[b, 0] - mean) ** 2)
                    / var - 1)
        assert abs(float(elbo.elbo()[b] - (log_px - kl))) < 5 * float(se[b]) + 1e-6


def test_forecasts_at_any_future_time_match_the_linear_solution():
    model, batch = exact_model(), irregular_batch(2)
    model.config.n_predict_samples = 4000
    t_last = batch.t[torch.arange(3), batch.lengths - 1][:, None]
    t_future = t_last + torch.tensor([[0.37, 1.1, 4.05]], dtype=F64)
    torch.manual_seed(1)
    fc = model.forecast(batch, t_future)
    for b in range(3):
        _, mean, var = exact_posterior(batch, b)
        g, h = latent_mean_map(t_future[b], batch.t[b, 0])
        want_mean = (g * mean + h)[:, None] * C.to(F64) + OFFSET.to(F64)
        want_std = ((g ** 2 * var)[:, None] * C.to(F64) ** 2 + NOISE.to(F64) ** 2).sqrt()
        se = want_std / math.sqrt(4000)
        assert bool(((fc.mean[b] - want_mean).abs() < 5 * se).all())
        torch.testing.assert_close(fc.std[b], want_std, rtol=0.05, atol=0)


@pytest.mark.parametrize("solver", ["dopri5", "rk4", "bosh3"])
def test_each_sequence_of_a_batch_gets_what_it_gets_alone(solver):
    """Per-sequence irregular grids: the batch's log-likelihood terms under fixed z_0 noise
    equal those of each sequence solved in a batch of its own."""
    torch.manual_seed(0)
    extra = {"dt": 0.3} if solver == "rk4" else {}
    model = LatentODE(LatentODEConfig(latent_dim=3, solver=solver, **extra), D).to(F64)
    batch = irregular_batch(3)
    noise = torch.randn(2, 3, 3, dtype=F64)
    with torch.no_grad():
        together = model.elbo(batch, 2, z0_noise=noise)
        for b in range(3):
            n = int(batch.lengths[b])
            alone = batch.index([b])
            alone = SequenceBatch(alone.x[:, :n], alone.mask[:, :n], alone.t[:, :n],
                                  alone.lengths)
            terms = model.elbo(alone, 2, z0_noise=noise[:, b:b + 1])
            torch.testing.assert_close(terms.log_lik, together.log_lik[b:b + 1], rtol=1e-10,
                                       atol=1e-10)
            torch.testing.assert_close(terms.kl, together.kl[b:b + 1], rtol=1e-10, atol=1e-10)


def test_the_encoder_reads_every_observation_and_only_time_differences():
    torch.manual_seed(0)
    model = LatentODE(LatentODEConfig(latent_dim=3), D).to(F64)
    batch = irregular_batch(4)
    with torch.no_grad():
        q = model.initial_posterior_of(batch)[0]
        shifted = SequenceBatch(batch.x, batch.mask, batch.t + 100.0, batch.lengths)
        torch.testing.assert_close(model.initial_posterior_of(shifted)[0], q, rtol=1e-9,
                                   atol=1e-9)
        for b, k in ((0, 5), (1, 3), (2, 0)):           # last valid steps and a first one
            d = int(batch.mask[b, k].nonzero()[0, 0])
            x = batch.x.clone()
            x[b, k, d] += 1.0
            moved = model.initial_posterior_of(SequenceBatch(x, batch.mask, batch.t,
                                                             batch.lengths))[0]
            assert not torch.allclose(moved[b], q[b]), (b, k)
            torch.testing.assert_close(moved[[i for i in range(3) if i != b]],
                                       q[[i for i in range(3) if i != b]])
        t = batch.t.clone()
        t[0, 2] += 0.05                                   # one gap longer, the next shorter
        moved = model.initial_posterior_of(SequenceBatch(batch.x, batch.mask, t,
                                                         batch.lengths))[0]
        assert not torch.allclose(moved[0], q[0])


def test_config_errors_are_one_line():
    for bad in ({"solver": "dopri5", "dt": 0.1}, {"solver": "rk45"}, {"encoder_solver": "dopri5"},
                {"rtol": -1.0}, {"latent_dim": 0}, {"checkpoint_every": 0},
                {"observation": "bernoulli", "free_emission_variance": True}):
        with pytest.raises(ConfigError) as info:
            LatentODEConfig(**bad)
        assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="no control inputs"):
        LatentODE(LatentODEConfig(), D, input_dim=1)


def test_checkpointed_training_gradients_equal_plain_ones():
    batch = irregular_batch(5)
    grads = []
    for every in (None, 2):
        torch.manual_seed(0)
        model = LatentODE(LatentODEConfig(latent_dim=3, checkpoint_every=every), D).to(F64)
        noise = torch.randn(1, 3, 3, dtype=F64)
        model.elbo(batch, z0_noise=noise).loss().backward()
        grads.append([p.grad for p in model.parameters()])
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
