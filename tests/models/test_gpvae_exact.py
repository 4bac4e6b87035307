"""GP-VAE against dense Gaussian algebra: the O(T) KL, site posterior and importance weights
on irregular times with missing sites and padding (float64)."""

import numpy as np
import pytest
import torch

from dynvae.data.batch import SequenceBatch
from dynvae.gp import sites as gp_sites
from dynvae.gp.inference import ParallelKalman, ScalarKalman, SequentialKalman
from dynvae.gp.kernels import Matern12, Matern32, Matern52
from dynvae.models.gpvae import GPVAE, GPVAEConfig
from dynvae.nn.mlp import inverse_softplus
from dynvae.nn.site_encoder import SiteEncoder
from tests.reference import dense_gpvae as dense

KERNELS = {
    "matern12": lambda: [Matern12(1.3, 0.8), Matern12(0.6, 1.5)],
    "matern32": lambda: [Matern32(1.1, 1.0), Matern32(2.5, 0.7)],
    "matern52": lambda: [Matern52(0.9, 1.2), Matern52(1.7, 0.5)],
    # not batchable: discretised channel by channel
    "matern12+matern32": lambda: [Matern12(0.8, 0.4) + Matern32(2.0, 1.0),
                                  Matern12(1.9, 1.1) + Matern32(0.7, 0.3)],
}


def irregular_times(B, T, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.cumsum(0.1 + torch.rand(B, T, generator=g, dtype=torch.float64), 1)


def random_sites(B, T, Z, lengths, seed=1):
    g = torch.Generator().manual_seed(seed)
    steps = torch.arange(T)[None] < lengths[:, None]
    mask = steps & (torch.rand(B, T, generator=g) < 0.7)
    mask[:, 0] = True
    mean = torch.randn(B, T, Z, generator=g, dtype=torch.float64)
    var = 0.05 + torch.rand(B, T, Z, generator=g, dtype=torch.float64)
    return steps, gp_sites.Sites(mean, var, mask)


@pytest.mark.parametrize("name", sorted(KERNELS))
@pytest.mark.parametrize("engine", [SequentialKalman(), ParallelKalman(), ScalarKalman()],
                         ids=["sequential", "parallel", "scalar"])
@torch.no_grad()
def test_kl_marginals_and_evidence_equal_dense_algebra(name, engine):
    kernels = KERNELS[name]()
    B, T, Z = 3, 9, 2
    lengths = torch.tensor([9, 6, 7])
    t = irregular_times(B, T)
    t[1, 6:] = 0.0                                      # padding times hold junk
    steps, s = random_sites(B, T, Z, lengths)
    post = gp_sites.site_posterior(kernels, t, steps, s, engine)
    kl = gp_sites.kl_to_prior(post, s)
    for b in range(B):
        n = int(lengths[b])
        idx = np.flatnonzero(s.mask[b, :n].numpy())
        want_kl = want_lml = 0.0
        for c, kern in enumerate(kernels):
            K = dense.gram(kern, t[b, :n].numpy())
            y, v = s.mean[b, idx, c].numpy(), s.var[b, idx, c].numpy()
            mean, cov = dense.site_posterior(K, idx, y, v)
            want_kl += dense.gaussian_kl(mean, cov, K)
            want_lml += dense.site_log_marginal(K, idx, y, v)
            np.testing.assert_allclose(post.mean[b, :n, c].numpy(), mean, rtol=0, atol=1e-9)
            np.testing.assert_allclose(post.var[b, :n, c].numpy(), np.diag(cov), rtol=0,
                                       atol=1e-9)
        assert abs(float(kl[b]) - want_kl) < 1e-9 * max(1.0, abs(want_kl))
        per_channel = gp_sites.kl_to_prior_per_channel(post, s)[b]
        assert abs(float(per_channel.sum()) - want_kl) < 1e-9 * max(1.0, abs(want_kl))
        assert abs(float(post.log_marginal[b]) - want_lml) < 1e-9 * max(1.0, abs(want_lml))


@torch.no_grad()
def test_ffbs_paths_have_the_dense_posterior_moments():
    kernels = KERNELS["matern32"]()
    B, T, Z = 1, 6, 2
    t = irregular_times(B, T, seed=3)
    steps, s = random_sites(B, T, Z, torch.tensor([T]), seed=4)
    post = gp_sites.site_posterior(kernels, t, steps, s, SequentialKalman())
    torch.manual_seed(0)
    z = gp_sites.sample_paths(post, s, 20000)[:, 0]                   # (K, T, Z)
    idx = np.flatnonzero(s.mask[0].numpy())
    for c, kern in enumerate(kernels):
        K = dense.gram(kern, t[0].numpy())
        mean, cov = dense.site_posterior(K, idx, s.mean[0, idx, c].numpy(),
                                         s.var[0, idx, c].numpy())
        emp = np.cov(z[..., c].numpy().T)
        se = np.sqrt(np.diag(cov) / z.shape[0])
        assert np.all(np.abs(z[..., c].mean(0).numpy() - mean) < 5 * se)
        np.testing.assert_allclose(emp, cov, atol=0.05 * np.abs(cov).max())


class ExactSites(SiteEncoder):
    """The exact sites of a linear-Gaussian decoder x_td = w_d z_t + b_d + N(0, s2_d):
    the product over observed d of N(x_td | w_d z_t + b_d, s2_d) as a Gaussian in z_t."""

    def __init__(self, w, b, s2, shift=0.0, scale=1.0):
        super().__init__(2 * len(w), 1)
        self.w, self.b, self.s2, self.shift, self.scale = w, b, s2, shift, scale

    def forward(self, features):
        D = len(self.w)
        x, m = features[..., :D], features[..., D:2 * D]
        precision = (m * self.w ** 2 / self.s2).sum(-1, keepdim=True)
        info = (m * self.w * (x - self.b) / self.s2).sum(-1, keepdim=True)
        none = precision == 0                                          # no observed entry
        var = torch.where(none, torch.ones_like(precision), 1 / precision)
        return info * var + self.shift, var * self.scale


W = torch.tensor([1.5, -0.7], dtype=torch.float64)
BIAS = torch.tensor([0.3, -1.0], dtype=torch.float64)
NOISE = torch.tensor([0.2, 0.5], dtype=torch.float64)


def linear_gpvae(shift=0.0, scale=1.0):
    config = GPVAEConfig(latent_dim=1, kernel="matern32", lengthscale=1.4,
                         kernel_variance=0.9, encoder_hidden=(4,), emission_hidden=(),
                         min_var=0.0)
    m = GPVAE(config, 2, encoder=ExactSites(W, BIAS, NOISE, shift, scale)).double()
    with torch.no_grad():
        m.observation.head.mean.weight.copy_(W[:, None])
        m.observation.head.mean.bias.copy_(BIAS)
        m.observation.head.variance.raw.copy_(inverse_softplus(NOISE))
    return m


def linear_batch(seed=5):
    B, T, D = 3, 8, 2
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([8, 5, 7])
    steps = torch.arange(T)[None] < lengths[:, None]
    mask = steps[..., None] & (torch.rand(B, T, D, generator=g) < 0.6)
    mask[:, 0, 0] = True
    mask[0, 3] = False                                                 # a step with no site
    x = torch.where(mask, 2 * torch.randn(B, T, D, generator=g, dtype=torch.float64), 0.0)
    return SequenceBatch(x, mask, irregular_times(B, T, seed), lengths)


def dense_lml(m, batch):
    K_kernel = m.kernels[0]
    out = []
    for b in range(batch.batch_size):
        n = int(batch.lengths[b])
        K = dense.gram(K_kernel, batch.t[b, :n].numpy())
        out.append(dense.linear_gaussian_log_marginal(
            K, batch.x[b, :n].numpy(), batch.mask[b, :n].numpy(), W.numpy(), BIAS.numpy(),
            NOISE.numpy()))
    return torch.tensor(out, dtype=torch.float64)


def closed_form_elbo(m, batch):
    """E_q[log p(x | z)] - KL with the expectation in closed form (linear decoder)."""
    batch = m._prepare(batch)
    s, post = m.posterior(batch)
    mean = post.mean * W + BIAS                                        # (B, T, D)
    ll = -0.5 * (np.log(2 * np.pi) + NOISE.log() + ((batch.x - mean) ** 2
                                                    + post.var * W ** 2) / NOISE)
    ll = torch.where(batch.mask, ll, torch.zeros_like(ll)).sum((1, 2))
    return ll - gp_sites.kl_to_prior(post, s)


@torch.no_grad()
def test_exact_sites_make_every_importance_weight_the_exact_marginal_likelihood():
    m, batch = linear_gpvae(), linear_batch()
    want = dense_lml(m, batch)
    log_lik, _, log_ratio = m.path_terms(batch, 16)
    torch.testing.assert_close(log_lik + log_ratio, want.expand(16, -1), rtol=0, atol=1e-9)
    torch.testing.assert_close(m.log_likelihood_bound(batch, 5), want, rtol=0, atol=1e-9)
    torch.testing.assert_close(closed_form_elbo(m, batch), want, rtol=0, atol=1e-9)
    # the Monte Carlo ELBO is below it and equal in expectation
    torch.manual_seed(1)
    draws = m.elbo(batch.index(list(range(3)) * 400), 1).elbo().view(400, 3)
    se = draws.std(0) / 20
    assert bool((draws.mean(0) - want).abs().lt(4 * se).all())
    assert bool((draws.std(0) > 1e-3).all())     # single draws do scatter around it


@torch.no_grad()
def test_perturbed_sites_give_a_strictly_lower_elbo_and_iwae_grows_with_k():
    m, batch = linear_gpvae(shift=0.4, scale=2.5), linear_batch()
    want = dense_lml(m, batch)
    assert bool((closed_form_elbo(m, batch) < want - 1e-3).all())
    many = batch.index([0] * 64 + [2] * 64)
    torch.manual_seed(2)
    bounds = [m.log_likelihood_bound(many, k).view(2, 64).mean(1) for k in (1, 4, 16, 64)]
    gaps = [want[[0, 2]] - b for b in bounds]
    for a, b in zip(gaps, gaps[1:], strict=False):
        assert bool((b < a).all()), (a, b)
    assert bool((gaps[-1] > -0.05).all())


@torch.no_grad()
def test_padding_leaves_every_deterministic_term_unchanged():
    m, batch = linear_gpvae(shift=0.4, scale=2.5), linear_batch()
    B, T, D = batch.x.shape
    pad = lambda v, fill: torch.cat([v, torch.full((B, 3, *v.shape[2:]), fill, dtype=v.dtype)],
                                    1)
    padded = SequenceBatch(pad(batch.x, 0.0), pad(batch.mask, False), pad(batch.t, -5.0),
                           batch.lengths)
    (s1, post1), (s2, post2) = (m.posterior(m._prepare(b)) for b in (batch, padded))
    torch.testing.assert_close(gp_sites.kl_to_prior(post1, s1), gp_sites.kl_to_prior(post2, s2),
                               rtol=0, atol=1e-12)
    valid = batch.valid
    for a, b in ((post1.mean, post2.mean), (post1.var, post2.var)):
        torch.testing.assert_close(a[valid], b[:, :T][valid], rtol=0, atol=1e-12)
    exact = linear_gpvae()
    torch.testing.assert_close(exact.log_likelihood_bound(batch, 3),
                               exact.log_likelihood_bound(padded, 3), rtol=0, atol=1e-9)


@torch.no_grad()
def test_forecast_matches_the_dense_gp_prediction():
    m, batch = linear_gpvae(), linear_batch()
    m.config.n_predict_samples = 20000
    t_last = batch.t[torch.arange(3), batch.lengths - 1]
    t_future = t_last[:, None] + torch.tensor([0.4, 1.1], dtype=torch.float64)
    torch.manual_seed(3)
    pred = m.forecast(batch, t_future)
    for b in range(3):
        n = int(batch.lengths[b])
        times = torch.cat([batch.t[b, :n], t_future[b]]).numpy()
        K = dense.gram(m.kernels[0], times)
        # the exact sites of the observed data, then the GP posterior at the future times
        observed = batch.mask[b, :n]
        keep = np.flatnonzero(observed.any(1).numpy())
        y, v = m.encoder(torch.cat([batch.x[b, :n], observed.double()], -1))
        mean, cov = dense.site_posterior(K, keep, y[keep, 0].numpy(), v[keep, 0].numpy())
        mu = mean[n:, None] * W.numpy() + BIAS.numpy()                 # (H, D)
        sd = np.sqrt(np.diag(cov)[n:, None] * W.numpy() ** 2 + NOISE.numpy())
        np.testing.assert_allclose(pred.mean[b].numpy(), mu, atol=4 * sd.max() / 100)
        np.testing.assert_allclose(pred.std[b].numpy(), sd, rtol=0.03)


def test_kl_gradients_pass_gradcheck():
    kernel = Matern32(1.2, 0.8)
    t = irregular_times(1, 5, seed=7)
    steps, s = random_sites(1, 5, 1, torch.tensor([5]), seed=8)

    del kernel.log_lengthscale                 # a plain tensor input in its place

    def kl(mean, var, log_lengthscale):
        kernel.log_lengthscale = log_lengthscale
        sites = gp_sites.Sites(mean, var, s.mask)
        return gp_sites.kl_to_prior(gp_sites.site_posterior([kernel], t, steps, sites,
                                                            SequentialKalman()), sites)

    inputs = (s.mean.clone().requires_grad_(), s.var.clone().requires_grad_(),
              torch.tensor(0.2, dtype=torch.float64, requires_grad=True))
    assert torch.autograd.gradcheck(kl, inputs)
