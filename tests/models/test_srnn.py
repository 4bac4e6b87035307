"""SRNN: with affine prior and emission networks, the model given its deterministic
states h_t is a linear Gaussian SSM with inputs h_t, so the exact log p(x) is a Kalman
filter of dynvae.ssm whatever the GRU; the exact posterior plugged in as q makes every
importance weight equal to it. The encoder sees x_{<t} only through z_{t-1} and h_t."""

import torch
from torch import nn
from torch.nn.functional import softplus

from dynvae.data.batch import SequenceBatch
from dynvae.models.common import log_mean_exp, observation_features
from dynvae.ssm import LinearGaussianSSM, kalman_filter
from tests.models.family import build
from tests.models.linear_dkf import ExactPosteriorEncoder
from tests.models.test_dkf_contract import make_batch, seeded


def affine_srnn(seed: int = 0, U: int = 1):
    """An SRNN (Z = D = 2) whose prior mean is A z + B h + b with diagonal A and constant
    variance, and whose emission is C z + E h + d with diagonal C and free variance."""
    m = build("srnn", U=U, latent_dim=2, mlp_hidden=(), free_emission_variance=True)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for head in (m.prior.head, m.observation.head):
            w = head.mean.weight
            w[:, :2] = torch.diag(0.5 + 0.4 * torch.rand(2, generator=g, dtype=w.dtype))
        m.prior.head.variance.weight.zero_()                 # Q independent of (z, h)
    return m


def ssm_of(m, h: torch.Tensor) -> LinearGaussianSSM:
    """The linear Gaussian SSM of an :func:`affine_srnn` given its states h (B, T, H)."""
    prior, emission = m.prior.head, m.observation.head
    A, B_h, b = prior.mean.weight[:, :2], prior.mean.weight[:, 2:], prior.mean.bias
    Q = torch.diag(softplus(prior.variance.bias) + prior.min_var)
    R = torch.diag(softplus(emission.variance.raw) + emission.min_var)
    return LinearGaussianSSM(
        initial_mean=h[:, 0] @ B_h.T + b, initial_cov=Q,          # z_0 ~ p(z_0 | z_{-1} = 0, h_0)
        transition_matrix=A, transition_cov=Q, transition_bias=b, transition_input=B_h,
        emission_matrix=emission.mean.weight[:, :2], emission_cov=R,
        emission_bias=emission.mean.bias, emission_input=emission.mean.weight[:, 2:])


class FixedContext(nn.Module):
    """Stands in for the backward GRU: returns a fixed context (B, T, C)."""

    def __init__(self, context: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("context", context)

    def forward(self, features, lengths):
        return self.context


class ExactResidual(nn.Module):
    """q(z_t | z_{t-1}, x) = exact posterior conditional, written as SRNN's residual on its
    prior mean: input [z_{t-1}, exact context_t, h_t] -> (exact mean - prior mean, var)."""

    def __init__(self, exact: ExactPosteriorEncoder, prior: nn.Module, width: int) -> None:
        super().__init__()
        self.exact, self.prior, self.width = exact, prior, width

    def forward(self, inputs):
        z, ctx, h = inputs[..., :2], inputs[..., 2:2 + self.width], inputs[..., 2 + self.width:]
        mean, var = self.exact.step(ctx, z)
        return mean - self.prior(torch.cat([z, h], -1))[0], var


def exact_srnn(m, batch):
    """Plug the exact posterior of ``batch`` into ``m`` as q; return the exact log p(x)."""
    h = m.deterministic_states(m.prepare(batch)).detach()
    ssm = ssm_of(m, h)
    exact = ExactPosteriorEncoder(ssm, SequenceBatch(batch.x, batch.mask, batch.t,
                                                     batch.lengths, h)).double()
    m.backward_summary = FixedContext(torch.cat([exact.context, h], -1))
    m.posterior = ExactResidual(exact, m.prior, exact.context.shape[-1])
    return kalman_filter(ssm, batch.x, batch.mask, h).log_likelihood


@torch.no_grad()
def test_exact_posterior_makes_every_importance_weight_the_kalman_log_likelihood():
    m, batch = affine_srnn(), make_batch(B=3, T=6, U=1, lengths=(6, 4, 5), seed=2)
    exact = exact_srnn(m, batch)                                            # (B,)
    paths = m.path_terms(batch, 64)
    torch.testing.assert_close(paths.log_lik + paths.log_ratio, exact.expand(64, -1),
                               rtol=0, atol=1e-9)
    torch.testing.assert_close(m.log_likelihood_bound(batch, 8), exact, rtol=0, atol=1e-9)
    # the closed-form-KL ELBO is unbiased for the same value
    paths = m.path_terms(batch, 4000)
    per_path = paths.log_lik - paths.kl
    se = per_path.std(0) / 4000 ** 0.5
    assert ((per_path.mean(0) - exact).abs() < 4 * se + 1e-9).all()


@torch.no_grad()
def test_learned_encoder_bounds_lie_below_the_kalman_log_likelihood_and_iwae_grows():
    m, batch = affine_srnn(seed=1), make_batch(B=3, T=5, U=1, lengths=(5, 3, 4), seed=3)
    h = m.deterministic_states(batch)
    exact = kalman_filter(ssm_of(m, h), batch.x, batch.mask, h).log_likelihood
    paths = m.path_terms(batch, 1920)
    elbo = paths.log_lik - paths.kl
    assert (elbo.mean(0) + 4 * elbo.std(0) / 1920 ** 0.5 < exact).all()
    log_w = paths.log_lik + paths.log_ratio
    iwae = [log_mean_exp(log_w.reshape(k, -1, 3)) for k in (1, 4, 16, 64)]
    means = torch.stack([v.mean(0) for v in iwae])                         # (4, B)
    assert (means[1:] > means[:-1]).all()
    assert (means[-1] < exact + 4 * iwae[-1].std(0) / 30 ** 0.5).all()


def test_deterministic_states_read_the_past_only():
    m, batch = build("srnn"), make_batch(lengths=(6, 6, 6))
    base = m.deterministic_states(batch)
    for s in range(6):
        x = batch.x.clone()
        x[:, s] += torch.where(batch.mask[:, s], 1.0, 0.0)
        h = m.deterministic_states(SequenceBatch(x, batch.mask, batch.t, batch.lengths))
        changed = ~torch.isclose(h, base, rtol=0, atol=1e-12).all(-1).all(0)   # (T,)
        assert changed.tolist() == [t > s for t in range(6)], s


def test_backward_encoder_sees_x_before_t_only_through_h_t():
    """a_t is a function of ([x_s, h_s] for s >= t): inputs before t, whatever they are
    (x_{<t} and h_{<t} both), leave it unchanged; q(z_t | ·) then reads only (z_{t-1}, a_t)
    and the prior's (z_{t-1}, h_t)."""
    m, batch = build("srnn"), make_batch(lengths=(6, 6, 6))
    h = m.deterministic_states(batch)
    inputs = torch.cat([observation_features(batch), h], -1)               # (B, T, F + H)
    t = 3
    base = m.backward_summary(inputs, batch.lengths)[:, t]
    for s in range(6):
        other = inputs.clone()
        other[:, s] += torch.randn(other[:, s].shape, dtype=other.dtype)
        a = m.backward_summary(other, batch.lengths)[:, t]
        assert (not torch.allclose(a, base, rtol=0, atol=1e-12)) == (s >= t), s


def test_posterior_mean_is_a_residual_on_the_prior_mean():
    m, batch = build("srnn"), make_batch()
    with torch.no_grad():
        m.posterior.head.mean.weight.zero_()
        m.posterior.head.mean.bias.zero_()
    paths = seeded(lambda: m.path_terms(batch, 2))
    # with a zero residual q's mean is the prior's: the KL is that of the variances alone
    h = m.deterministic_states(batch)
    z_prev = torch.cat([torch.zeros_like(paths.z[:, :, :1]), paths.z[:, :, :-1]], 2)
    p_mean, p_var = m.prior(torch.cat([z_prev, h.expand(2, -1, -1, -1)], -1))
    features = torch.cat([observation_features(batch, fill="steps"), h], -1)
    inputs = torch.cat([z_prev, m.backward_summary(features, batch.lengths)
                        .expand(2, -1, -1, -1)], -1)
    q_var = m.posterior(inputs)[1]
    kl = 0.5 * (torch.log(p_var / q_var) + q_var / p_var - 1).sum(-1)
    torch.testing.assert_close(paths.kl, (kl * batch.valid).sum(-1))


def test_forecast_continues_from_the_deterministic_state_of_the_last_step():
    m, batch = build("srnn", n_predict_samples=512), make_batch(lengths=(6, 4, 5))
    t_future = batch.lengths[:, None].to(torch.float64) + torch.arange(2.0, dtype=torch.float64)
    f_all = seeded(lambda: m.forecast(batch, t_future))
    one = batch.index([1])
    short = SequenceBatch(one.x[:, :4], one.mask[:, :4], one.t[:, :4], one.lengths)
    f_one = seeded(lambda: m.forecast(short, t_future[1:2]))
    assert ((f_all.mean[1] - f_one.mean[0]).abs() < 0.3 * f_all.std[1]).all()
