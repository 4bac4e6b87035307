"""The model contract for STORN, SRNN, RVAE (both encoders) and DSAE: masking and padding
invariance, dtypes, forecast times, sampling with and without inputs, IWAE against the
ELBO, gradients, save and load, results without grad, and one clear error per bad input."""

import pytest
import torch

from dynvae.data.batch import SequenceBatch
from dynvae.errors import ConfigError, DataError
from dynvae.models.common import log_mean_exp
from dynvae.models.registry import model_class
from dynvae.train.checkpoint import load_checkpoint, save_checkpoint
from tests.models.family import VARIANTS, build
from tests.models.test_dkf_contract import make_batch, seeded

ALL = sorted(VARIANTS)
F64 = torch.float64


def with_x(batch, x):
    return SequenceBatch(x, batch.mask, batch.t, batch.lengths, batch.u)


@pytest.mark.parametrize("variant", ALL)
def test_masked_values_change_no_bound(variant):
    m, batch = build(variant, U=1), make_batch(U=1)
    noisy = with_x(batch, torch.where(batch.mask, batch.x, 100 * torch.randn_like(batch.x)))
    for fn in (lambda b: m.elbo(b, 2), lambda b: (m.log_likelihood_bound(b, 3),),
               lambda b: m.reconstruct(b)):
        for u, v in zip(seeded(fn, batch), seeded(fn, noisy), strict=True):
            torch.testing.assert_close(u, v, rtol=0, atol=0)


@pytest.mark.parametrize("variant", ALL)
def test_padding_changes_no_per_sequence_term(variant):
    m, batch = build(variant), make_batch()
    B, T, _ = batch.x.shape
    pad = lambda v, fill: torch.cat([v, torch.full((B, 4, *v.shape[2:]), fill, dtype=v.dtype)], 1)
    padded = SequenceBatch(pad(batch.x, 0.0), pad(batch.mask, False),
                           torch.arange(T + 4, dtype=F64).expand(B, -1), batch.lengths)
    for fn in (lambda b: m.elbo(b, 3), lambda b: (m.log_likelihood_bound(b, 5),)):
        for u, v in zip(seeded(fn, batch), seeded(fn, padded), strict=True):
            torch.testing.assert_close(u, v, rtol=1e-10, atol=1e-10)
    r1, r2 = seeded(m.reconstruct, batch), seeded(m.reconstruct, padded)
    torch.testing.assert_close(r1.mean[batch.valid], r2.mean[:, :T][batch.valid])
    t_future = batch.lengths[:, None].to(F64) + torch.arange(2.0, dtype=F64)
    f1, f2 = seeded(m.forecast, batch, t_future), seeded(m.forecast, padded, t_future)
    torch.testing.assert_close(f1.mean, f2.mean)
    torch.testing.assert_close(f1.std, f2.std)


@pytest.mark.parametrize("variant", ALL)
def test_float32_model_casts_batches_and_float64_model_keeps_them(variant):
    batch = make_batch(U=1)                                               # float64 batch
    terms = build(variant, torch.float32, U=1).elbo(batch)
    assert terms.log_lik.dtype == torch.float32 and torch.isfinite(terms.elbo()).all()
    m64 = build(variant, F64, U=1)
    assert m64.elbo(batch).elbo().dtype == F64
    assert m64.reconstruct(batch.to(dtype=torch.float32)).mean.dtype == F64


@pytest.mark.parametrize("variant", ALL)
def test_forecast_times_are_steps_of_each_sequence_grid(variant):
    m, batch = build(variant), make_batch(lengths=(6, 4, 5))
    dt = 0.5
    batch = SequenceBatch(batch.x, batch.mask, dt * batch.t, batch.lengths)
    t_last = dt * (batch.lengths[:, None] - 1).to(F64)
    one_to_three = seeded(m.forecast, batch, t_last + dt * torch.tensor([1.0, 2.0, 3.0]))
    skipping = seeded(m.forecast, batch, t_last + dt * torch.tensor([1.0, 3.0]))
    # t_last + 3 dt is the third step: the same draws give the same prediction
    torch.testing.assert_close(skipping.mean, one_to_three.mean[:, [0, 2]], rtol=0, atol=0)
    torch.testing.assert_close(skipping.std, one_to_three.std[:, [0, 2]], rtol=0, atol=0)
    with pytest.raises(DataError, match="discrete-time"):
        m.forecast(batch, t_last + dt * torch.tensor([1.0, 1.5]))
    with pytest.raises(DataError, match="after its last time"):
        m.forecast(batch, t_last + dt * torch.tensor([0.0, 1.0]))
    with pytest.raises(DataError, match=r"shape \(B=3, H\)"):
        m.forecast(batch, t_last[:2] + dt)
    with pytest.raises(DataError, match="strictly increasing"):
        m.forecast(batch, t_last + dt * torch.tensor([2.0, 1.0]))


@pytest.mark.parametrize("variant", ALL)
def test_forecast_with_inputs_needs_them_at_consecutive_steps(variant):
    m, batch = build(variant, U=1), make_batch(U=1, lengths=(6, 4, 5))
    t_future = batch.lengths[:, None].to(F64) + torch.arange(3.0, dtype=F64)
    u_future = torch.randn(3, 3, 1, dtype=F64)
    assert m.forecast(batch, t_future, u_future).mean.shape == (3, 3, 2)
    with pytest.raises(DataError, match="u_future"):
        m.forecast(batch, t_future)
    with pytest.raises(DataError, match="consecutive"):
        m.forecast(batch, t_future + torch.tensor([0.0, 0.0, 1.0], dtype=F64), u_future)
    with pytest.raises(DataError, match="without control inputs"):
        build(variant).forecast(make_batch(), t_future, u_future)


@pytest.mark.parametrize("variant", ALL)
def test_sample_with_and_without_inputs(variant):
    t = torch.arange(5.0)
    assert build(variant).sample(4, t).shape == (4, 5, 2)
    with pytest.raises(DataError, match="without control inputs"):
        build(variant).sample(4, t, torch.randn(5, 1))
    m = build(variant, U=1)
    assert m.sample(4, t, torch.randn(5, 1)).shape == (4, 5, 2)
    assert m.sample(4, t, torch.randn(4, 5, 1)).shape == (4, 5, 2)
    for bad in (None, torch.randn(4, 1), torch.randn(3, 5, 1)):
        with pytest.raises(DataError, match="control inputs"):
            m.sample(4, t, bad)
    with pytest.raises(DataError, match="n >= 1"):
        m.sample(0, t, torch.randn(5, 1))
    with pytest.raises(DataError, match="strictly increasing"):
        m.sample(4, torch.tensor([0.0, 2.0, 1.0, 3.0, 4.0]), torch.randn(5, 1))


@pytest.mark.parametrize("variant", ALL)
def test_iwae_is_above_the_elbo_and_grows_with_k(variant):
    m, batch = build(variant), make_batch()
    with torch.no_grad():
        paths = m.path_terms(batch, 1024)
    log_w = paths.log_lik + paths.log_ratio                                # (1024, B)
    elbo = paths.log_lik - paths.kl
    means = torch.stack([log_mean_exp(log_w.reshape(k, -1, 3)).mean(0) for k in (1, 4, 16)])
    # E[IWAE_1] = E[ELBO]: the Monte Carlo and the closed-form KL agree on average
    assert ((means[0] - elbo.mean(0)).abs() < 4 * (log_w.std(0) + elbo.std(0)) / 32).all()
    assert (means[1:] >= means[:-1]).all()
    assert (seeded(m.log_likelihood_bound, batch, 64) > elbo.mean(0)).all()


@pytest.mark.parametrize("variant", ALL)
def test_elbo_averages_the_paths(variant):
    m, batch = build(variant), make_batch()
    many, paths = seeded(m.elbo, batch, 4), seeded(m.path_terms, batch, 4)
    torch.testing.assert_close(many.log_lik, paths.log_lik.mean(0))
    torch.testing.assert_close(many.kl, paths.kl.mean(0))
    torch.testing.assert_close(many.n_obs, batch.n_observed().to(F64))


@pytest.mark.parametrize("variant", ALL)
def test_gradients_reach_every_parameter(variant):
    m, batch = build(variant, torch.float32, U=1), make_batch(U=1, dtype=torch.float32)
    m.elbo(batch).loss().backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("variant", ALL)
def test_elbo_gradient_with_respect_to_the_data(variant):
    m = build(variant, latent_dim=2, hidden_size=3, encoder_hidden=3, mlp_hidden=(3,))
    batch = make_batch(B=2, T=4, lengths=(4, 3))

    def bound(x):
        torch.manual_seed(3)      # the same noise in every evaluation
        return m.elbo(with_x(batch, x), n_samples=2).elbo()

    x = batch.x.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(bound, (x,), eps=1e-6, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("variant", ALL)
def test_save_and_load_give_identical_outputs(variant, tmp_path):
    m, batch = build(variant, U=1), make_batch(U=1)
    save_checkpoint(tmp_path / "m.pt", {"config": m.config.to_dict(), "state": m.state_dict()})
    payload = load_checkpoint(tmp_path / "m.pt")
    cls = model_class(VARIANTS[variant][0])
    other = cls.from_config(payload["config"], 2, 1).double()
    other.load_state_dict(payload["state"])
    t_future = batch.lengths[:, None].to(F64)              # t_last + 1
    u_future = torch.randn(3, 1, 1, dtype=F64)
    for fn in (lambda mm: mm.elbo(batch, 2), lambda mm: (mm.log_likelihood_bound(batch, 3),),
               lambda mm: mm.reconstruct(batch), lambda mm: mm.forecast(batch, t_future, u_future),
               lambda mm: (mm.sample(2, torch.arange(3.0), torch.randn(3, 1)),)):
        for u, v in zip(seeded(fn, m), seeded(fn, other), strict=True):
            torch.testing.assert_close(u, v, rtol=0, atol=0)


@pytest.mark.parametrize("variant", ALL)
def test_results_carry_no_gradient(variant):
    m, batch = build(variant, torch.float32), make_batch(dtype=torch.float32)
    t_future = batch.lengths[:, None].float() + 1
    outputs = [*m.reconstruct(batch), *m.forecast(batch, t_future),
               m.sample(2, torch.arange(3.0)), m.log_likelihood_bound(batch, 2)]
    assert not any(o.requires_grad for o in outputs)
    assert outputs[1].numpy().shape == (3, 6, 2)          # the mean, usable at once


@pytest.mark.parametrize("variant", ALL)
def test_bernoulli_observation_on_binary_data(variant):
    m, batch = build(variant, observation="bernoulli"), make_batch()
    binary = with_x(batch, (batch.x > 0).to(F64))
    terms = m.elbo(binary)
    assert torch.isfinite(terms.elbo()).all() and (terms.log_lik <= 0).all()
    r = m.reconstruct(binary)
    assert ((r.mean >= 0) & (r.mean <= 1)).all()
    assert set(m.sample(3, torch.arange(4.0)).unique().tolist()) <= {0.0, 1.0}
    with pytest.raises(DataError, match=r"\[0, 1\]"):
        m.elbo(batch)


@pytest.mark.parametrize("variant", ALL)
def test_batches_that_do_not_fit_the_model_raise_one_data_error(variant):
    with pytest.raises(DataError, match="channels"):
        build(variant, D=3).elbo(make_batch())
    with pytest.raises(DataError, match="no u"):
        build(variant, U=1).elbo(make_batch())
    with pytest.raises(DataError, match="input_dim=0"):
        build(variant).elbo(make_batch(U=1))


@pytest.mark.parametrize("variant", ALL)
@pytest.mark.parametrize("kwargs,match", [
    (dict(observation="poisson"), "observation"),
    (dict(latent_dim=0), "latent_dim"),
    (dict(hidden_size=-2), "hidden_size"),
    (dict(mlp_hidden=(4, 0)), "mlp_hidden"),
    (dict(min_var=-1.0), "min_var"),
    (dict(n_predict_samples=0), "n_predict_samples"),
    (dict(observation="bernoulli", free_emission_variance=True), "free_emission_variance"),
    (dict(latent_dims=2), "unknown .* config keys"),
])
def test_bad_configuration_raises_one_config_error(variant, kwargs, match):
    name, small = VARIANTS[variant]
    with pytest.raises(ConfigError, match=match):
        model_class(name).from_config({**small, **kwargs}, data_dim=2)


@pytest.mark.parametrize("variant", ALL)
def test_registry_builds_from_a_json_mapping_and_round_trips_the_config(variant):
    name, small = VARIANTS[variant]
    cls = model_class(name)
    m = cls.from_config({**small, "mlp_hidden": [4, 4]}, data_dim=2)
    assert m.config.mlp_hidden == (4, 4)
    assert cls.Config.from_dict(m.config.to_dict()) == m.config
    assert torch.isfinite(m.elbo(make_batch(dtype=torch.float32)).elbo()).all()


@pytest.mark.parametrize("variant", ALL)
def test_single_step_sequences(variant):
    m = build(variant)
    batch = SequenceBatch.from_tensor(torch.randn(2, 1, 2, dtype=F64))
    assert torch.isfinite(m.elbo(batch).elbo()).all()
    t_future = torch.arange(1.0, 4.0, dtype=F64).expand(2, 3)
    assert m.forecast(batch, t_future).mean.shape == (2, 3, 2)
    assert m.sample(3, torch.zeros(1)).shape == (3, 1, 2)
