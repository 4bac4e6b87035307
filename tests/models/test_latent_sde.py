"""Latent SDE contract (float64): per-sequence grids equal solo solves, missing values
and padding are ignored, gradients, IWAE bounds, predictions and clear errors."""

import math

import pytest
import torch
from torch import nn
from torch.func import functional_call

from dynvae.data.batch import SequenceBatch
from dynvae.errors import ConfigError, DataError
from dynvae.models.common import log_mean_exp
from dynvae.models.latent_sde import LatentSDE, LatentSDEConfig, solver_grid
from dynvae.models.registry import model_class
from dynvae.sde import BrownianPath

D, Z, DT = 2, 3, 0.05
LENGTHS = [7, 4, 6]


def make_model(**overrides) -> LatentSDE:
    torch.manual_seed(0)
    config = LatentSDEConfig(**{**dict(latent_dim=Z, context_dim=4, encoder_hidden=8,
                                       drift_hidden=(16,), diffusion_hidden=4,
                                       emission_hidden=(8,), dt=DT, n_predict_samples=8),
                                **overrides})
    return LatentSDE(config, D).double()


def irregular_batch() -> SequenceBatch:
    """Three sequences, own irregular times and lengths, one missing entry, garbage
    (inf) times in the padding."""
    g = torch.Generator().manual_seed(1)
    B, T = len(LENGTHS), max(LENGTHS)
    t = (0.05 + 0.3 * torch.rand(B, T, generator=g, dtype=torch.float64)).cumsum(1)
    lengths = torch.tensor(LENGTHS)
    valid = torch.arange(T)[None, :] < lengths[:, None]
    t = torch.where(valid, t, torch.full_like(t, math.inf))
    mask = valid[..., None].expand(B, T, D).clone()
    mask[0, 2, 1] = False
    x = torch.where(mask, torch.randn(B, T, D, generator=g, dtype=torch.float64), 0.0)
    return SequenceBatch(x, mask, t, lengths)


def fixed_noise(batch: SequenceBatch, K: int = 1, seed: int = 2, dt: float = DT):
    grid = solver_grid(batch, dt)
    bm = BrownianPath(float(grid.min()), float(grid.max()), (K * batch.batch_size, Z),
                      seed=seed)
    z0_noise = torch.randn(K, batch.batch_size, Z, dtype=torch.float64,
                           generator=torch.Generator().manual_seed(seed))
    return bm, z0_noise


def test_per_sequence_grids_equal_each_sequence_solved_alone():
    model, batch = make_model(), irregular_batch()
    bm, eps = fixed_noise(batch)
    terms = model.elbo(batch, bm=bm, z0_noise=eps)
    log_w = model.log_weights(batch, 1, bm=bm, z0_noise=eps)
    for b, L in enumerate(LENGTHS):
        alone = SequenceBatch(batch.x[b:b + 1, :L], batch.mask[b:b + 1, :L],
                              batch.t[b:b + 1, :L], torch.tensor([L]))
        one = model.elbo(alone, bm=bm.rows([b]), z0_noise=eps[:, b:b + 1])
        torch.testing.assert_close(one.log_lik[0], terms.log_lik[b], rtol=0, atol=1e-10)
        torch.testing.assert_close(one.kl[0], terms.kl[b], rtol=0, atol=1e-10)
        w = model.log_weights(alone, 1, bm=bm.rows([b]), z0_noise=eps[:, b:b + 1])
        torch.testing.assert_close(w[0, 0], log_w[0, b], rtol=0, atol=1e-10)
    assert bool((terms.kl > 0).all())


def test_missing_values_and_padding_do_not_change_the_terms():
    model, batch = make_model(), irregular_batch()
    B = batch.batch_size
    pad = lambda v, fill: torch.cat([v, torch.full((B, 3, *v.shape[2:]), fill,  # noqa: E731
                                                   dtype=v.dtype)], 1)
    longer = SequenceBatch(pad(batch.x, 0.0), pad(batch.mask, False), pad(batch.t, -5.0),
                           batch.lengths)
    # the longer batch is solved first: its step times include every one of the shorter
    # batch's, so the Brownian path answers the later queries from stored knots
    bm, eps = fixed_noise(longer)
    padded = model.elbo(longer, bm=bm, z0_noise=eps)
    ref = model.elbo(batch, bm=bm, z0_noise=eps)
    noisy = torch.where(batch.mask, batch.x, torch.full_like(batch.x, 1e3))
    garbage = model.elbo(SequenceBatch(noisy, batch.mask, batch.t, batch.lengths),
                         bm=bm, z0_noise=eps)
    for other in (padded, garbage):
        torch.testing.assert_close(other.log_lik, ref.log_lik, rtol=0, atol=1e-10)
        torch.testing.assert_close(other.kl, ref.kl, rtol=0, atol=1e-10)
        assert torch.equal(other.n_obs, ref.n_obs)


def test_gradients_reach_every_parameter():
    model, batch = make_model(), irregular_batch()
    model.elbo(batch, 2).loss().backward()
    dead = [n for n, p in model.named_parameters()
            if p.grad is None or not bool(p.grad.abs().sum() > 0)]
    assert dead == []


def test_iwae_grows_with_k_and_bounds_the_elbo():
    model, batch = make_model(), irregular_batch()
    torch.manual_seed(3)
    K = 256
    with torch.no_grad():
        elbo = model.elbo(batch, K).elbo()                                   # (B,)
        log_w = model.log_weights(batch, K)                                  # (K, B)
        bound = model.log_likelihood_bound(batch, K)                         # (B,)
    # E[log w] is the ELBO: the stochastic integral in log dP/dQ has mean zero
    se = log_w.std(0) / math.sqrt(K)
    assert bool(((log_w.mean(0) - elbo).abs() < 4 * se).all())
    # IWAE(k) averaged over the K / k disjoint groups of one pool of weights: nested
    # groups make the average non-decreasing in k (concavity of log)
    iwae = [log_mean_exp(log_w.reshape(K // k, k, -1).transpose(0, 1)).mean(0).sum()
            for k in (1, 4, 16, 64, 256)]
    assert all(a <= b for a, b in zip(iwae[:-1], iwae[1:], strict=True))
    assert iwae[-1] - iwae[0] > 8 * float(se.pow(2).sum().sqrt())
    assert float(elbo.sum()) < float(bound.sum())


def test_reconstruct_forecast_sample_shapes():
    model, batch = make_model(), irregular_batch()
    pred = model.reconstruct(batch)
    assert pred.mean.shape == batch.x.shape and bool((pred.std > 0).all())
    t_last = batch.t.gather(1, (batch.lengths - 1)[:, None])
    fut = model.forecast(batch, t_last + torch.tensor([[0.1, 0.5]], dtype=torch.float64))
    assert fut.mean.shape == (3, 2, D) and bool(torch.isfinite(fut.std).all())
    draws = model.sample(5, torch.linspace(0, 1, 9, dtype=torch.float64))
    assert draws.shape == (5, 9, D) and bool(torch.isfinite(draws).all())
    assert model_class("latent-sde") is LatentSDE


def test_milstein_matches_euler_on_the_same_noise_to_first_order():
    batch = irregular_batch()
    bm, eps = fixed_noise(batch)
    euler = make_model().elbo(batch, bm=bm, z0_noise=eps)
    milstein = make_model(solver="milstein").elbo(batch, bm=bm, z0_noise=eps)
    assert torch.allclose(milstein.kl, euler.kl, rtol=0.2)
    assert not torch.equal(milstein.kl, euler.kl)


@pytest.mark.parametrize("overrides, message", [
    (dict(solver="rk4"), "unknown solver 'rk4'"),
    (dict(dt=-0.1), "dt must be > 0"),
    (dict(gradients="adjoints"), "unknown gradients .adjoints."),
    (dict(drift_hidden=(0,)), "drift_hidden must be positive"),
    (dict(min_diffusion=-1.0), "min_var and min_diffusion must be >= 0"),
])
def test_bad_config_is_one_clear_error(overrides, message):
    with pytest.raises(ConfigError, match=message):
        LatentSDEConfig(**overrides)


def test_bad_inputs_are_clear_errors():
    model, batch = make_model(), irregular_batch()
    with pytest.raises(ConfigError, match="no control inputs"):
        LatentSDE(LatentSDEConfig(), D, input_dim=1)
    with pytest.raises(DataError, match="D=1 channels"):
        model.elbo(SequenceBatch.from_tensor(torch.zeros(1, 3, 1)))
    with pytest.raises(DataError, match="after each sequence's last time"):
        model.forecast(batch, torch.zeros(3, 2, dtype=torch.float64))
    with pytest.raises(DataError, match="strictly increasing"):
        model.sample(2, torch.tensor([0.0, 1.0, 0.5], dtype=torch.float64))
    with pytest.raises(ConfigError, match="unknown latent SDE config keys"):
        LatentSDE.from_config({"latent_dims": 2}, D)


@pytest.mark.slow
def test_compiled_euler_matches_eager_euler():
    """torch.compile of the posterior SDE steps (~20 s to compile) gives the same terms."""
    batch = irregular_batch()
    bm, eps = fixed_noise(batch)
    eager = make_model().elbo(batch, bm=bm, z0_noise=eps)
    compiled = make_model(solver="euler-compiled").elbo(batch, bm=bm, z0_noise=eps)
    torch.testing.assert_close(compiled.kl, eager.kl, rtol=0, atol=1e-10)
    torch.testing.assert_close(compiled.kl_dims, eager.kl_dims, rtol=0, atol=1e-10)
    torch.testing.assert_close(compiled.log_lik, eager.log_lik, rtol=0, atol=1e-10)


@pytest.mark.parametrize("solver", ["euler", "milstein"])
@pytest.mark.parametrize("gradients", ["adjoint", "checkpoint"])
def test_the_kl_of_each_dimension_is_the_same_whatever_the_gradients(solver, gradients):
    """The fused posterior (backpropagation) and the separate networks of the adjoint and
    the checkpointed solves split the KL over latent dimensions alike (same noise)."""
    batch = irregular_batch()
    bm, eps = fixed_noise(batch, K=2)
    ref = make_model(solver=solver).elbo(batch, 2, bm=bm, z0_noise=eps)
    got = make_model(solver=solver, gradients=gradients).elbo(batch, 2, bm=bm, z0_noise=eps)
    assert ref.kl_dims.shape == (batch.batch_size, Z)
    torch.testing.assert_close(got.kl_dims, ref.kl_dims, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(got.kl_dims.sum(-1), got.kl, rtol=1e-12, atol=1e-12)


def test_elbo_and_log_weight_gradients_match_finite_differences():
    """Through the encoder, the reparametrised paths (irregular grids, padding), the
    Girsanov terms and a diffusion parameter, with the noise fixed."""
    model = make_model(context_dim=2, encoder_hidden=3, drift_hidden=(3,), diffusion_hidden=2,
                       emission_hidden=(3,), dt=0.2)
    batch = irregular_batch()
    bm, eps = fixed_noise(batch, dt=0.2)
    noise = {"bm": bm, "z0_noise": eps}
    model.elbo(batch, **noise)                                  # refine the path once

    def with_row(x1):                       # the data with sequence 1 replaced by x1
        x = torch.cat([batch.x[:1], x1[None], batch.x[2:]])
        return SequenceBatch(x, batch.mask, batch.t, batch.lengths)

    class ELBOCall(nn.Module):              # functional_call needs a forward
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, batch, **kwargs):
            return self.model.elbo(batch, **kwargs)

    def elbo(x1, w2):
        return functional_call(ELBOCall(), {"model.diffusion.w2": w2}, (with_row(x1),),
                               noise).elbo()

    def log_weight(x1):
        return model.log_weights(with_row(x1), 1, **noise)[0]

    x1 = batch.x[1].clone().requires_grad_(True)                           # (T, D)
    w2 = model.diffusion.w2.detach().clone().requires_grad_(True)
    assert torch.autograd.gradcheck(elbo, (x1, w2), eps=1e-6, atol=1e-6, rtol=1e-5)
    assert torch.autograd.gradcheck(log_weight, (x1,), eps=1e-6, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("gradients", ["adjoint", "checkpoint"])
def test_adjoint_and_checkpointed_elbo_and_iwae_gradients_equal_backprop(gradients):
    """Irregular per-sequence grids, padding and a missing entry; the same noise."""
    batch = irregular_batch()
    grads = []
    for name in ("backprop", gradients):
        model = make_model(gradients=name, solver="milstein")
        bm, z0_noise = fixed_noise(batch, K=2)
        loss = model.elbo(batch, 2, bm=bm, z0_noise=z0_noise).loss()
        loss = loss - model.log_weights(batch, 2, bm=bm, z0_noise=z0_noise).sum()
        grads.append(torch.autograd.grad(loss, list(model.parameters())))
    for got, ref in zip(grads[1], grads[0], strict=True):
        torch.testing.assert_close(got, ref, rtol=1e-8, atol=1e-10)
