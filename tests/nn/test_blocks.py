"""Building blocks against torch.distributions and their defining formulas."""

import torch
from torch.distributions import (
    Bernoulli,
    Categorical,
    Independent,
    MixtureSameFamily,
    Normal,
    kl_divergence,
)

from dynvae.gaussian import kl_diag_gaussians
from dynvae.models.common import last_valid, mixture_moments
from dynvae.nn import (
    MLP,
    BernoulliObservation,
    Combiner,
    GatedTransition,
    GaussianHead,
    GaussianObservation,
    inverse_softplus,
)
from dynvae.nn.encoders import reverse_padded

F64 = torch.float64


def test_kl_diag_gaussians_equals_torch_distributions():
    mq, mp = torch.randn(2, 5, 3, dtype=F64), torch.randn(2, 5, 3, dtype=F64)
    vq, vp = torch.rand(2, 5, 3, dtype=F64) + 0.1, torch.rand(2, 5, 3, dtype=F64) + 0.1
    ours = kl_diag_gaussians(mq, vq, mp, vp)
    ref = kl_divergence(Normal(mq, vq.sqrt()), Normal(mp, vp.sqrt()))
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)
    ref_joint = kl_divergence(Independent(Normal(mq, vq.sqrt()), 1),
                              Independent(Normal(mp, vp.sqrt()), 1))
    torch.testing.assert_close(ours.sum(-1), ref_joint, rtol=1e-12, atol=1e-12)


def test_observation_log_probs_equal_torch_distributions_where_observed():
    h = torch.randn(4, 6, 5, dtype=F64)
    x = torch.randn(4, 6, 3, dtype=F64)
    mask = torch.rand(4, 6, 3) < 0.6
    gauss = GaussianObservation(5, 3).double()
    mean, var = gauss(h)
    lp = gauss.log_prob(x, (mean, var), mask)
    torch.testing.assert_close(lp[mask], Normal(mean, var.sqrt()).log_prob(x)[mask])
    assert (lp[~mask] == 0).all()
    bern = BernoulliObservation(5, 3).double()
    (logits,) = bern(h)
    xb = (x > 0).to(F64)
    lp = bern.log_prob(xb, (logits,), mask)
    torch.testing.assert_close(lp[mask], Bernoulli(logits=logits).log_prob(xb)[mask])
    assert (lp[~mask] == 0).all()
    p, v = bern.moments((logits,))
    torch.testing.assert_close(v, Bernoulli(logits=logits).variance)


def test_gaussian_head_floor_and_free_variance():
    head = GaussianHead(4, 2, min_var=0.5).double()
    _, var = head(100 * torch.randn(50, 4, dtype=F64))
    assert (var >= 0.5).all()
    free = GaussianHead(4, 2, min_var=0.0, free_variance=True).double()
    with torch.no_grad():
        free.variance.raw.copy_(inverse_softplus(torch.tensor([0.3, 2.0], dtype=F64)))
    _, var = free(torch.randn(7, 3, 4, dtype=F64))
    torch.testing.assert_close(var, torch.tensor([0.3, 2.0], dtype=F64).expand(7, 3, 2))


def test_mlp_without_hidden_layers_is_affine():
    mlp = MLP(3, (), 2).double()
    a, b = torch.randn(3, dtype=F64), torch.randn(3, dtype=F64)
    torch.testing.assert_close(mlp(a + b) - mlp(b), mlp(a) - mlp(torch.zeros(3, dtype=F64)))


def test_combiner_formula():
    comb = Combiner(latent_dim=2, context_dim=4).double()
    z, ctx = torch.randn(5, 2, dtype=F64), torch.tanh(torch.randn(5, 4, dtype=F64))
    mean, var = comb(z, ctx)
    h = 0.5 * (torch.tanh(comb.latent_to_hidden(z)) + ctx)
    torch.testing.assert_close(mean, comb.head.mean(h))
    torch.testing.assert_close(var, torch.nn.functional.softplus(comb.head.variance(h)) + 1e-4)


def test_gated_transition_starts_from_identity_linear_path():
    tr = GatedTransition(latent_dim=3, input_dim=1, hidden_sizes=(5,)).double()
    z, u = torch.randn(6, 3, dtype=F64), torch.randn(6, 1, dtype=F64)
    torch.testing.assert_close(tr.linear(torch.cat([z, u], -1)), z)
    mean, var = tr(z, u)
    g = torch.sigmoid(tr.gate(torch.cat([z, u], -1)))
    torch.testing.assert_close(mean, (1 - g) * z + g * tr.proposal(torch.cat([z, u], -1)))
    assert (var > 0).all()


def test_reverse_padded_reverses_within_lengths_and_is_an_involution():
    x = torch.arange(2 * 5, dtype=F64).reshape(2, 5, 1)
    lengths = torch.tensor([3, 5])
    r = reverse_padded(x, lengths)
    assert r[0, :, 0].tolist() == [2, 1, 0, 3, 4]
    assert r[1, :, 0].tolist() == [9, 8, 7, 6, 5]
    torch.testing.assert_close(reverse_padded(r, lengths), x)


def test_last_valid_picks_each_sequence_last_step():
    x = torch.randn(4, 2, 5, 3, dtype=F64)
    out = last_valid(x, torch.tensor([2, 5]))
    torch.testing.assert_close(out[:, 0], x[:, 0, 1])
    torch.testing.assert_close(out[:, 1], x[:, 1, 4])


def test_mixture_moments_equal_torch_mixture():
    means, variances = torch.randn(7, 4, dtype=F64), torch.rand(7, 4, dtype=F64) + 0.1
    mean, std = mixture_moments(means, variances)
    mix = MixtureSameFamily(Categorical(torch.ones(4, 7, dtype=F64)),
                            Normal(means.T, variances.T.sqrt()))
    torch.testing.assert_close(mean, mix.mean)
    torch.testing.assert_close(std, mix.stddev)
