"""GP-VAE contract: missing values, gradients, kernel strategies, inputs, prior samples and
clear errors for bad configurations and inputs."""

import numpy as np
import pytest
import torch

from dynvae.data.batch import SequenceBatch
from dynvae.errors import ConfigError, DataError
from dynvae.gp.kernels import Matern52
from dynvae.models.gpvae import GPVAE, GPVAEConfig
from dynvae.models.registry import model_class
from dynvae.nn.mlp import inverse_softplus
from dynvae.nn.site_encoder import MLPSiteEncoder
from tests.reference import dense_gpvae as dense

SMALL = dict(latent_dim=3, encoder_hidden=(8,), emission_hidden=(8,), n_predict_samples=4)


def make_batch(B=3, T=7, D=2, U=0, lengths=(7, 5, 6), dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor(lengths)
    mask = (torch.rand(B, T, D, generator=g) < 0.6) & (
        torch.arange(T)[None] < lengths[:, None])[..., None]
    mask[:, 0] = True
    x = torch.where(mask, torch.randn(B, T, D, generator=g, dtype=dtype), 0.0)
    t = torch.cumsum(0.2 + torch.rand(B, T, generator=g, dtype=dtype), 1)
    u = torch.randn(B, T, U, generator=g, dtype=dtype) if U else None
    return SequenceBatch(x, mask, t, lengths, u)


def model(dtype=torch.float64, D=2, U=0, **kw):
    return GPVAE.from_config(GPVAEConfig(**{**SMALL, **kw}), D, U).to(dtype)


def seeded(fn, *args, seed=11):
    """fn(*args) after resetting the global seed, so that two calls draw the same noise."""
    torch.manual_seed(seed)
    return fn(*args)


def test_missing_values_do_not_change_any_output():
    m, batch = model(), make_batch()
    noisy = SequenceBatch(torch.where(batch.mask, batch.x, 100 * torch.randn_like(batch.x)),
                          batch.mask, batch.t, batch.lengths)
    for fn in (lambda b: tuple(m.elbo(b, 2)), lambda b: (m.log_likelihood_bound(b, 3),),
               lambda b: tuple(m.reconstruct(b))):
        for u, v in zip(seeded(fn, batch), seeded(fn, noisy), strict=True):
            assert torch.equal(u, v)
    assert not torch.equal(batch.x, noisy.x)


def test_gradients_reach_encoder_decoder_and_kernel():
    m, batch = model(torch.float32), make_batch(dtype=torch.float32)
    m.elbo(batch).loss().backward()
    for name, p in m.named_parameters():
        if name.endswith("log_variance"):          # fixed by default
            assert not p.requires_grad and p.grad is None, name
        else:
            assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_learnable_flags_choose_the_trained_kernel_hyperparameters():
    m = model(learn_kernel=False, learn_kernel_variance=True)
    m.elbo(make_batch()).loss().backward()
    for k in m.kernels:
        assert k.log_lengthscale.grad is None and k.log_variance.grad.abs() > 0


def test_kernel_strategy_object_and_specs():
    m = GPVAE(GPVAEConfig(**SMALL), 2, kernel=Matern52(0.7)).double()
    assert all(isinstance(k, Matern52) and k.state_dim == 3 for k in m.kernels)
    assert float(m.kernels[0].lengthscale.detach()) == pytest.approx(0.7)
    assert m.kernels[0] is not m.kernels[1]                      # one copy per channel
    for spec in ("matern12", "matern12+matern32", "matern32*periodic"):
        terms = model(kernel=spec, period=3.0).elbo(make_batch())
        assert bool(torch.isfinite(terms.elbo()).all()), spec


def test_parallel_engine_gives_the_sequential_bound():
    batch = make_batch()
    a, b = model(), model(engine="parallel")
    b.load_state_dict(a.state_dict())
    for u, v in zip(seeded(lambda: a.elbo(batch, 2)), seeded(lambda: b.elbo(batch, 2)),
                    strict=True):
        torch.testing.assert_close(u, v, rtol=1e-9, atol=1e-9)


def test_inputs_reach_encoder_and_decoder():
    m, batch = model(U=1), make_batch(U=1)
    terms = m.elbo(batch)
    assert bool(torch.isfinite(terms.elbo()).all())
    t_future = batch.t[torch.arange(3), batch.lengths - 1][:, None] + torch.tensor([[1.0, 2.0]],
                                                                                   dtype=torch.float64)
    pred = m.forecast(batch, t_future, torch.zeros(3, 2, 1, dtype=torch.float64))
    assert pred.mean.shape == (3, 2, 2) and bool((pred.std > 0).all())
    assert m.sample(4, torch.arange(5.0), torch.zeros(5, 1)).shape == (4, 5, 2)
    with pytest.raises(DataError, match="u_future"):
        m.forecast(batch, t_future)


def test_prior_samples_have_the_gp_covariance():
    config = GPVAEConfig(latent_dim=1, lengthscale=1.5, encoder_hidden=(4,), emission_hidden=(),
                         min_var=0.0)
    m = GPVAE(config, 1).double()
    with torch.no_grad():
        m.observation.head.mean.weight.fill_(2.0)
        m.observation.head.mean.bias.fill_(0.5)
        m.observation.head.variance.raw.copy_(inverse_softplus(torch.tensor([0.1])))
    t = torch.tensor([0.0, 0.3, 1.1, 1.5, 3.0], dtype=torch.float64)
    torch.manual_seed(0)
    x = m.sample(20000, t)[..., 0].numpy()                               # (n, T)
    with torch.no_grad():
        want = 4.0 * dense.gram(m.kernels[0], t.numpy()) + 0.1 * np.eye(5)
    np.testing.assert_allclose(x.mean(0), 0.5, atol=0.1)
    np.testing.assert_allclose(np.cov(x.T), want, atol=0.15)


def test_registry_and_config_round_trip():
    assert model_class("gpvae") is GPVAE
    config = GPVAEConfig(**SMALL)
    again = GPVAE.from_config(config.to_dict(), 2)
    assert again.config == config


@pytest.mark.parametrize("kw, message", [
    (dict(kernel="matern99"), "unknown kernel 'matern99'"),
    (dict(engine="fisher"), "unknown engine 'fisher'"),
    (dict(latent_dim=0), "latent_dim must be > 0"),
    (dict(lengthscale=-1.0), "lengthscale must be > 0"),
    (dict(observation="poisson"), "unknown observation 'poisson'"),
    (dict(observation="bernoulli", free_emission_variance=True), "free_emission_variance"),
    (dict(encoder_hidden=(0,)), "encoder_hidden must be positive integers"),
])
def test_bad_configs_are_one_clear_error(kw, message):
    with pytest.raises(ConfigError, match=message):
        model(**kw)


def test_bad_strategies_and_config_keys():
    with pytest.raises(ConfigError, match="kernel must be a dynvae.gp.kernels.Kernel"):
        GPVAE(GPVAEConfig(**SMALL), 2, kernel="matern32")
    with pytest.raises(ConfigError, match="SiteEncoder with latent_dim 3"):
        GPVAE(GPVAEConfig(**SMALL), 2, encoder=MLPSiteEncoder(4, 2, (4,)))
    with pytest.raises(ConfigError, match="unknown GP-VAE config keys"):
        GPVAE.from_config({"latent_dims": 3}, 2)


def test_bad_inputs_are_one_clear_error():
    m, batch = model(), make_batch()
    with pytest.raises(DataError, match="D=3 channels"):
        m.elbo(make_batch(D=3))
    with pytest.raises(DataError, match="after each sequence's last time"):
        m.forecast(batch, batch.t[:, :2])
    with pytest.raises(DataError, match="strictly increasing"):
        m.sample(2, torch.tensor([0.0, 1.0, 1.0]))
    with pytest.raises(DataError, match="needs values in \\[0, 1\\]"):
        model(observation="bernoulli").elbo(batch)
    with pytest.raises(ConfigError, match="n_samples must be > 0"):
        m.elbo(batch, 0)
