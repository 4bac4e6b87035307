"""DKF contract: masking, padding, gradients, encoder dependency structure, dtypes,
shapes, inputs and bad configurations."""

import pytest
import torch

from dynvae.data.batch import SequenceBatch
from dynvae.errors import ConfigError, DataError
from dynvae.models.common import observation_features
from dynvae.models.dkf import DeepKalmanFilter, DKFConfig
from dynvae.models.registry import model_class

ENCODERS = ["backward", "local", "filtering", "bidirectional"]
SMALL = dict(latent_dim=3, encoder_hidden=6, transition_hidden=(6,), emission_hidden=(6,))


def make_batch(B=3, T=6, D=2, U=0, lengths=(6, 4, 5), dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor(lengths)
    mask = (torch.rand(B, T, D, generator=g) < 0.7) & (
        torch.arange(T)[None] < lengths[:, None])[..., None]
    mask[:, 0] = True
    x = torch.where(mask, torch.randn(B, T, D, generator=g, dtype=dtype), 0.0)
    u = torch.randn(B, T, U, generator=g, dtype=dtype) if U else None
    return SequenceBatch(x, mask, torch.arange(T, dtype=dtype).expand(B, T), lengths, u)


def model(dtype=torch.float64, D=2, U=0, **kw):
    return DeepKalmanFilter.from_config(DKFConfig(**{**SMALL, **kw}), D, U).to(dtype)


def seeded(fn, *args, seed=11):
    """fn(*args) after resetting the global seed, so that two calls draw the same noise."""
    torch.manual_seed(seed)
    return fn(*args)


@pytest.mark.parametrize("encoder", ENCODERS)
def test_masked_values_do_not_change_the_loss(encoder):
    m, batch = model(encoder=encoder, transition="gated"), make_batch()
    noisy = torch.where(batch.mask, batch.x, 100 * torch.randn_like(batch.x))
    other = SequenceBatch(noisy, batch.mask, batch.t, batch.lengths)
    a = seeded(lambda: m.elbo(batch, 2))
    b = seeded(lambda: m.elbo(other, 2))
    for u, v in zip(a, b, strict=True):
        torch.testing.assert_close(u, v, rtol=0, atol=0)
    assert not torch.equal(batch.x, noisy)


@pytest.mark.parametrize("encoder", ENCODERS)
def test_padding_does_not_change_per_sequence_terms(encoder):
    m, batch = model(encoder=encoder, n_predict_samples=4), make_batch()
    B, T, D = batch.x.shape
    pad = lambda v, fill: torch.cat([v, torch.full((B, 4, *v.shape[2:]), fill, dtype=v.dtype)], 1)
    padded = SequenceBatch(pad(batch.x, 0.0), pad(batch.mask, False),
                           torch.arange(T + 4, dtype=batch.t.dtype).expand(B, -1), batch.lengths)
    for fn in (lambda b: m.elbo(b, 3), lambda b: (m.log_likelihood_bound(b, 5),)):
        for u, v in zip(seeded(fn, batch), seeded(fn, padded), strict=True):
            torch.testing.assert_close(u, v, rtol=1e-10, atol=1e-10)
    r1 = seeded(lambda: m.reconstruct(batch))
    r2 = seeded(lambda: m.reconstruct(padded))
    valid = batch.valid
    torch.testing.assert_close(r1.mean[valid], r2.mean[:, :T][valid])


@pytest.mark.parametrize("encoder", ENCODERS)
def test_gradients_flow_through_the_reparametrisation(encoder):
    m, batch = model(torch.float32, encoder=encoder), make_batch(dtype=torch.float32)
    m.elbo(batch).loss().backward()
    for name, p in m.named_parameters():
        if name.startswith("encoder.z_start") or name.startswith("initial_prior"):
            continue
        assert p.grad is not None and p.grad.abs().sum() > 0, name


# step t of each encoder may see these steps of x (T = 6, sequence of full length)
VISIBLE = {
    "backward": lambda t: set(range(t, 6)),
    "filtering": lambda t: set(range(0, t + 1)),
    "local": lambda t: {t},
    "bidirectional": lambda t: set(range(6)),
}


@pytest.mark.parametrize("encoder", ENCODERS)
def test_encoder_sees_exactly_its_part_of_the_sequence(encoder):
    m, batch = model(encoder=encoder), make_batch(lengths=(6, 6, 6))
    enc = m.encoder
    feats = observation_features(batch)
    z_prev = torch.randn(3, 3, dtype=torch.float64)
    t = 3

    def q_at_t(f):
        ctx = enc.summarise(f, batch.lengths)
        return torch.cat(enc.step(ctx[:, t], z_prev), -1)

    base = q_at_t(feats)
    for s in range(6):
        f = feats.clone()
        f[:, s, :2] += torch.randn(3, 2, dtype=torch.float64)
        changed = not torch.allclose(q_at_t(f), base, rtol=0, atol=1e-12)
        assert changed == (s in VISIBLE[encoder](t)), (encoder, s)
    # and q depends on z_{t-1}
    assert not torch.allclose(torch.cat(enc.step(enc.summarise(feats, batch.lengths)[:, t],
                                                 z_prev + 1), -1), base)


def test_backward_encoder_starts_at_each_sequence_end():
    m = model(encoder="backward")
    batch = make_batch(lengths=(6, 4, 5))
    feats = observation_features(batch)
    ctx = m.encoder.summarise(feats, batch.lengths)
    # sequence 1 alone, truncated to its length, gives the same context on valid steps
    alone = m.encoder.summarise(feats[1:2, :4], batch.lengths[1:2])
    torch.testing.assert_close(ctx[1:2, :4], alone)


def test_n_samples_averages_paths():
    m, batch = model(), make_batch()
    many = seeded(lambda: m.elbo(batch, 4))
    paths = seeded(lambda: m.path_terms(batch, 4))
    torch.testing.assert_close(many.log_lik, paths[0].mean(0))
    torch.testing.assert_close(many.kl_dims, paths[1].mean(0))
    torch.testing.assert_close(many.kl, paths[1].mean(0).sum(-1))
    torch.testing.assert_close(many.n_obs, batch.n_observed().to(torch.float64))


def test_float32_default_and_float64_batches_are_cast():
    m = model(torch.float32, U=1)
    batch = make_batch(U=1)                             # float64 batch
    terms = m.elbo(batch)
    assert terms.log_lik.dtype == torch.float32 and torch.isfinite(terms.elbo()).all()
    m64 = model(torch.float64, U=1, transition="gated", initial_prior="learned")
    assert m64.elbo(batch).elbo().dtype == torch.float64


def test_prediction_shapes_with_inputs():
    m, batch = model(U=1, n_predict_samples=5), make_batch(U=1)
    r = m.reconstruct(batch)
    assert r.mean.shape == r.std.shape == batch.x.shape and (r.std > 0).all()
    t_future = batch.lengths[:, None].to(torch.float64) + torch.arange(3.0, dtype=torch.float64)
    f = m.forecast(batch, t_future, torch.randn(3, 3, 1, dtype=torch.float64))
    assert f.mean.shape == (3, 3, 2) and torch.isfinite(f.std).all()
    assert m.sample(4, torch.arange(5.0), torch.randn(5, 1)).shape == (4, 5, 2)
    with pytest.raises(DataError, match="u_future"):
        m.forecast(batch, t_future)
    with pytest.raises(DataError, match="t_future"):
        m.forecast(batch, t_future - 10)
    with pytest.raises(DataError, match="H >= 1"):
        m.forecast(batch, t_future[:, :0], torch.randn(3, 0, 1, dtype=torch.float64))
    with pytest.raises(DataError, match="inputs"):
        m.sample(4, torch.arange(5.0))


def test_bernoulli_observation_on_binary_data():
    m = model(observation="bernoulli")
    batch = make_batch()
    binary = SequenceBatch((batch.x > 0).to(batch.x.dtype), batch.mask, batch.t, batch.lengths)
    assert torch.isfinite(m.elbo(binary).elbo()).all()
    r = m.reconstruct(binary)
    assert ((r.mean >= 0) & (r.mean <= 1)).all()
    assert set(m.sample(3, torch.arange(4.0)).unique().tolist()) <= {0.0, 1.0}
    with pytest.raises(DataError, match=r"\[0, 1\]"):
        m.elbo(batch)


@pytest.mark.parametrize("kwargs,match", [
    (dict(encoder="smoother"), "encoder"),
    (dict(transition="linear"), "transition"),
    (dict(observation="poisson"), "observation"),
    (dict(initial_prior="uniform"), "initial_prior"),
    (dict(latent_dim=0), "latent_dim"),
    (dict(min_var=-1.0), "min_var"),
    (dict(emission_hidden=(8, 0)), "emission_hidden"),
    (dict(observation="bernoulli", free_emission_variance=True), "free_emission_variance"),
])
def test_bad_config_raises_config_error(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        DKFConfig(**kwargs)


def test_registry_and_from_config_mapping():
    cls = model_class("dkf")
    assert cls is DeepKalmanFilter
    m = cls.from_config({"latent_dim": 2, "emission_hidden": [4, 4]}, data_dim=2)
    assert m.config.emission_hidden == (4, 4)
    assert DKFConfig.from_dict(m.config.to_dict()) == m.config
    with pytest.raises(ConfigError, match="unknown DKF config keys"):
        cls.from_config({"latent_dims": 2}, data_dim=2)
    with pytest.raises(ConfigError, match="unknown model"):
        model_class("dmm")


def test_batch_that_does_not_fit_the_model_raises_data_error():
    with pytest.raises(DataError, match="channels"):
        model(D=3).elbo(make_batch())
    with pytest.raises(DataError, match="no u"):
        model(U=1).elbo(make_batch())
    with pytest.raises(DataError, match="input_dim=0"):
        model().elbo(make_batch(U=1))


def test_single_step_sequences():
    m = model()
    batch = SequenceBatch.from_tensor(torch.randn(2, 1, 2, dtype=torch.float64))
    assert torch.isfinite(m.elbo(batch).elbo()).all()
    t_future = torch.arange(1.0, 4.0, dtype=torch.float64).expand(2, 3)
    assert m.forecast(batch, t_future).mean.shape == (2, 3, 2)
    assert m.sample(3, torch.zeros(1)).shape == (3, 1, 2)
