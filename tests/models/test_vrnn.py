"""VRNN contract: masking, padding, causality, gradients, IWAE, predictions, configs."""

import pytest
import torch

from dynvae.data.batch import SequenceBatch
from dynvae.errors import ConfigError, DataError
from dynvae.models.common import log_mean_exp
from dynvae.models.registry import model_class
from dynvae.models.vrnn import VRNN, VRNNConfig
from tests.models.test_dkf_contract import make_batch, seeded

SMALL = dict(latent_dim=3, hidden_size=6, feature_size=5, mlp_hidden=(6,), n_predict_samples=4)


def model(dtype=torch.float64, D=2, U=0, **kw):
    return VRNN.from_config(VRNNConfig(**{**SMALL, **kw}), D, U).to(dtype)


def test_masked_values_do_not_change_the_loss():
    m, batch = model(U=1), make_batch(U=1)
    noisy = torch.where(batch.mask, batch.x, 50 * torch.randn_like(batch.x))
    other = SequenceBatch(noisy, batch.mask, batch.t, batch.lengths, batch.u)
    a, b = seeded(lambda: m.elbo(batch, 2)), seeded(lambda: m.elbo(other, 2))
    for u, v in zip(a, b, strict=True):
        torch.testing.assert_close(u, v, rtol=0, atol=0)


def test_padding_does_not_change_per_sequence_terms():
    m, batch = model(), make_batch()
    B, T, D = batch.x.shape
    pad = lambda v, fill: torch.cat([v, torch.full((B, 3, *v.shape[2:]), fill, dtype=v.dtype)], 1)
    padded = SequenceBatch(pad(batch.x, 0.0), pad(batch.mask, False),
                           torch.arange(T + 3, dtype=batch.t.dtype).expand(B, -1), batch.lengths)
    for u, v in zip(seeded(lambda: m.elbo(batch, 3)), seeded(lambda: m.elbo(padded, 3)),
                    strict=True):
        torch.testing.assert_close(u, v, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(seeded(lambda: m.log_likelihood_bound(batch, 4)),
                               seeded(lambda: m.log_likelihood_bound(padded, 4)))


def test_steps_are_causal_with_the_filtering_encoder():
    m, batch = model(encoder="filtering"), make_batch(lengths=(6, 6, 6))
    x = batch.x.clone()
    x[:, 4:] += 1.0
    later = SequenceBatch(x, batch.mask, batch.t, batch.lengths)
    a, b = seeded(lambda: m.steps(batch, 2)), seeded(lambda: m.steps(later, 2))
    for name in ("log_lik", "kl", "log_ratio", "mean", "h"):
        u, v = getattr(a, name), getattr(b, name)
        torch.testing.assert_close(u[:, :, :4], v[:, :, :4], rtol=0, atol=0)
        assert not torch.allclose(u[:, :, 4:], v[:, :, 4:]), name


@pytest.mark.parametrize("encoder", ["bidirectional", "filtering"])
def test_only_the_bidirectional_encoder_reads_later_entries(encoder):
    """q(z_2 | .) of the default encoder depends on x_{3:T} (so a missing x_t can be
    inferred from what follows); the filtering encoder's does not."""
    m, batch = model(encoder=encoder), make_batch(lengths=(6, 6, 6))
    x = batch.x.clone().requires_grad_()
    s = m.steps(SequenceBatch(x, batch.mask, batch.t, batch.lengths), 1)
    (grad,) = torch.autograd.grad(s.kl[:, :, 2].sum(), x)
    later = grad[:, 3:][batch.mask[:, 3:]].abs().sum()
    assert (later > 0) if encoder == "bidirectional" else (later == 0)


def test_gradients_reach_every_network():
    m, batch = model(torch.float32), make_batch(dtype=torch.float32)
    m.elbo(batch).loss().backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_iwae_is_above_elbo_and_grows_with_k_on_average():
    m, batch = model(), make_batch()
    with torch.no_grad():
        s = m.steps(batch, 1024)
    log_w = (s.log_lik + s.log_ratio).sum(-1)                          # (1024, B)
    elbo = (s.log_lik - s.kl.sum(-1)).sum(-1)
    means = torch.stack([log_mean_exp(log_w.reshape(k, -1, 3)).mean(0) for k in (1, 4, 16)])
    assert ((means[0] - elbo.mean(0)).abs() < 4 * (log_w.std(0) + elbo.std(0)) / 32).all()
    assert (means[1:] >= means[:-1]).all()
    assert (seeded(lambda: m.log_likelihood_bound(batch, 64)) > elbo.mean(0)).all()


@pytest.mark.parametrize("feedback", ["mean", "sample"])
def test_predictions_shapes_and_dtypes(feedback):
    m, batch = model(torch.float32, U=1, generation_feedback=feedback), make_batch(U=1)
    r = m.reconstruct(batch)
    assert r.mean.shape == batch.x.shape and r.mean.dtype == torch.float32
    assert (r.std > 0).all()
    t_future = torch.tensor([[6.0, 7.0], [4.0, 5.0], [5.0, 6.0]])
    f = m.forecast(batch, t_future, torch.randn(3, 2, 1))
    assert f.mean.shape == (3, 2, 2) and torch.isfinite(f.std).all()
    assert m.sample(5, torch.arange(4.0), torch.randn(4, 1)).shape == (5, 4, 2)
    with pytest.raises(DataError, match="t_future"):
        m.forecast(batch, torch.tensor([[5.0, 7.0], [4.0, 5.0], [5.0, 6.0]]),
                   torch.randn(3, 2, 1))


def test_forecast_starts_from_each_sequence_last_valid_state():
    m, batch = model(n_predict_samples=256), make_batch(lengths=(6, 4, 5))
    t_future = batch.lengths[:, None].to(torch.float64) + torch.arange(2.0, dtype=torch.float64)
    f_all = seeded(lambda: m.forecast(batch, t_future))
    one = batch.index([1])
    short = SequenceBatch(one.x[:, :4], one.mask[:, :4], one.t[:, :4], one.lengths)
    f_one = seeded(lambda: m.forecast(short, t_future[1:2]))
    assert f_one.mean.shape == (1, 2, 2)
    # different Monte Carlo draws: both means are within std/16 of the same value
    assert ((f_all.mean[1] - f_one.mean[0]).abs() < 0.5 * f_all.std[1]).all()


def test_bernoulli_vrnn_and_float64():
    m = model(observation="bernoulli")
    batch = make_batch()
    binary = SequenceBatch((batch.x > 0).to(batch.x.dtype), batch.mask, batch.t, batch.lengths)
    terms = m.elbo(binary)
    assert terms.log_lik.dtype == torch.float64 and torch.isfinite(terms.elbo()).all()
    assert (terms.log_lik <= 0).all()


@pytest.mark.parametrize("kwargs,match", [
    (dict(observation="poisson"), "observation"),
    (dict(generation_feedback="mode"), "generation_feedback"),
    (dict(hidden_size=0), "hidden_size"),
    (dict(mlp_hidden=(-1,)), "mlp_hidden"),
    (dict(observation="bernoulli", free_emission_variance=True), "free_emission_variance"),
])
def test_bad_config_raises_config_error(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        VRNNConfig(**kwargs)


def test_registry():
    assert model_class("vrnn") is VRNN
    m = model_class("vrnn").from_config({"latent_dim": 2, "mlp_hidden": []}, data_dim=2)
    assert m.config.mlp_hidden == ()
    assert torch.isfinite(m.elbo(make_batch(dtype=torch.float32)).elbo()).all()


def test_single_step_sequences():
    m = model()
    batch = SequenceBatch.from_tensor(torch.randn(2, 1, 2, dtype=torch.float64))
    assert torch.isfinite(m.elbo(batch).elbo()).all()
    f = m.forecast(batch, torch.tensor([[1.0, 2.0], [1.0, 2.0]], dtype=torch.float64))
    assert f.mean.shape == (2, 2, 2)
    assert m.sample(3, torch.zeros(1)).shape == (3, 1, 2)
