"""The DKF's inverse autoregressive flow posterior (``posterior_flow``): the flow's
log-determinant against the autograd Jacobian, its autoregressive structure, log q of a
whole path against a dense change of variables, the Gaussian posterior unchanged with
``posterior_flow=0``, and the CLI. The contract suite runs the flow as ``dkf-iaf``."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
import torch
from torch.autograd.functional import jacobian

from dynvae.cli import main
from dynvae.data.batch import SequenceBatch
from dynvae.errors import ConfigError
from dynvae.gaussian import diag_gaussian_log_prob, kl_diag_gaussians
from dynvae.models.common import log_mean_exp, observation_features
from dynvae.models.dkf import DeepKalmanFilter, DKFConfig
from dynvae.nn.iaf import InverseAutoregressiveFlow
from dynvae.train.collapse import free_bits_kl

F64 = torch.float64


def perturbed(module: torch.nn.Module, scale: float = 0.5) -> torch.nn.Module:
    """``module`` in float64 with every parameter moved off its initial value."""
    module = module.to(F64)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn_like(p))
    return module


def flow_of(Z: int, C: int = 3, n_steps: int = 3, hidden: int = 11
            ) -> InverseAutoregressiveFlow:
    torch.manual_seed(0)
    return perturbed(InverseAutoregressiveFlow(Z, C, n_steps, hidden))


@pytest.mark.parametrize("Z", [1, 2, 5])
def test_log_det_is_the_log_abs_det_of_the_autograd_jacobian(Z):
    flow = flow_of(Z)
    g = torch.Generator().manual_seed(1)
    for _ in range(4):
        z, h = torch.randn(Z, generator=g, dtype=F64), torch.randn(3, generator=g, dtype=F64)
        J = jacobian(lambda v, h=h: flow(v, h)[0], z)                        # (Z, Z)
        _, log_det = flow(z, h)
        torch.testing.assert_close(log_det, torch.linalg.slogdet(J).logabsdet,
                                   rtol=0, atol=1e-10)


@pytest.mark.parametrize("Z", [1, 2, 5])
def test_each_step_is_autoregressive_in_its_order_and_the_orders_alternate(Z):
    """Step k's output i depends on z_j only for j before i in its order (forward for
    even k, reversed for odd k): strictly lower / upper triangular Jacobian plus the
    gate sigma_i on the diagonal. Two steps together mix every pair of dimensions."""
    flow = flow_of(Z, n_steps=2)
    weights, H = flow.masked_weights(), 11
    g = torch.Generator().manual_seed(2)
    z, h = torch.randn(Z, generator=g, dtype=F64), torch.randn(3, generator=g, dtype=F64)
    conditioning = flow.condition(h)
    for k in range(2):
        one = lambda v, k=k: flow.transform(v, conditioning[k * H:(k + 1) * H], [weights[k]])
        J = jacobian(lambda v, one=one: one(v)[0], z)
        upper = torch.triu(torch.ones(Z, Z, dtype=torch.bool), 1)
        ahead = upper if k == 0 else upper.T      # z_j at or after i in step k's order
        assert bool((J[ahead] == 0).all()), J
        torch.testing.assert_close(torch.diagonal(J).log().sum(), one(z)[1], rtol=0,
                                   atol=1e-12)
    if Z > 1:
        J = jacobian(lambda v: flow(v, h)[0], z)
        assert bool((J != 0).all()), J


def small_model(posterior_flow: int, **extra) -> DeepKalmanFilter:
    torch.manual_seed(0)
    config = DKFConfig(latent_dim=3, encoder_hidden=6, transition_hidden=(5,),
                       emission_hidden=(5,), initial_prior="learned",
                       posterior_flow=posterior_flow, flow_hidden=7, **extra)
    return perturbed(DeepKalmanFilter.from_config(config, 2), 0.2).eval()


def small_batch() -> SequenceBatch:
    g = torch.Generator().manual_seed(1)
    B, T, D = 3, 6, 2
    lengths = torch.tensor([6, 4, 5])
    valid = torch.arange(T)[None, :, None] < lengths[:, None, None]
    mask = (torch.rand(B, T, D, generator=g) < 0.8) & valid
    x = torch.randn(B, T, D, generator=g, dtype=F64) * mask
    return SequenceBatch(x, mask, torch.arange(T, dtype=F64).expand(B, T), lengths)


def dense_path(model: DeepKalmanFilter, batch: SequenceBatch, K: int, seed: int):
    """The path of ``posterior_paths`` under ``seed`` recomputed step by step with the
    flow's plain forward on h_t = [context_t, z_{t-1}] and log q(z_t | ·) = log
    N(z_base) - log |det| of the autograd Jacobian of z_base -> z_t, per sample."""
    batch = model._prepare(batch)
    fill = "steps" if model.encoder.reads_future else "zero"
    ctx = model.encoder.summarise(model.frame_input(observation_features(
        batch, batch.mask, fill)), batch.lengths)                             # (B, T, C)
    K_B = (K, batch.batch_size)
    z_prev, zs, log_qs = model.encoder.initial_latent(K_B), [], []
    torch.manual_seed(seed)
    for ctx_t in ctx.unbind(1):
        mean, var = model.encoder.step(ctx_t, z_prev)
        z_base = mean + var.sqrt() * torch.randn(mean.shape, dtype=F64)
        h = torch.cat([ctx_t.expand(*K_B, -1), z_prev], -1)
        z_t = model.flow(z_base, h)[0]
        log_det = torch.stack([torch.stack([torch.linalg.slogdet(jacobian(
            lambda v, hb=h[k, b]: model.flow(v, hb)[0], z_base[k, b])).logabsdet
            for b in range(K_B[1])]) for k in range(K)])                       # (K, B)
        log_qs.append(diag_gaussian_log_prob(z_base, mean, var).sum(-1) - log_det)
        z_prev = z_t
        zs.append(z_t)
    return torch.stack(zs, -2), torch.stack(log_qs, -1)                      # (K,B,T,Z), (K,B,T)


def test_log_q_of_a_path_and_the_bounds_equal_a_dense_change_of_variables():
    model, batch = small_model(2), small_batch()
    with torch.no_grad():
        torch.manual_seed(5)
        paths = model.posterior_paths(model._prepare(batch), 2)
        z, log_q = dense_path(model, batch, 2, seed=5)
        torch.testing.assert_close(paths.z, z, rtol=0, atol=1e-12)
        torch.testing.assert_close(paths.log_q, log_q, rtol=0, atol=1e-10)
        # the ELBO's KL: sum over valid steps of log q - log p, averaged over the samples
        p_mean, p_var = model.latent_prior(z, None)
        log_p = diag_gaussian_log_prob(z, p_mean, p_var).sum(-1)
        kl = ((log_q - log_p) * batch.valid).sum(-1).mean(0)                 # (B,)
        torch.manual_seed(5)
        terms = model.elbo(batch, 2)
    torch.testing.assert_close(terms.kl, kl, rtol=0, atol=1e-10)
    assert terms.kl_dims is None


def gaussian_posterior_reference(model: DeepKalmanFilter, batch: SequenceBatch, K: int):
    """Log-likelihood, closed-form KL per dimension and log p/q of the Gaussian
    posterior, written out from the model's building blocks as the DKF computed them
    before the flow existed."""
    batch = model._prepare(batch)
    fill = "steps" if model.encoder.reads_future else "zero"
    ctx = model.encoder.summarise(model.frame_input(observation_features(
        batch, batch.mask, fill)), batch.lengths)
    z_prev = model.encoder.initial_latent((K, batch.batch_size))
    zs, means, variances = [], [], []
    for ctx_t in ctx.unbind(1):
        mean, var = model.encoder.step(ctx_t, z_prev)
        eps = torch.randn(mean.shape, dtype=mean.dtype, device=mean.device)
        z_prev = mean + var.sqrt() * eps
        zs.append(z_prev)
        means.append(mean)
        variances.append(var)
    z, q_mean, q_var = (torch.stack(v, -2) for v in (zs, means, variances))
    p_mean, p_var = model.latent_prior(z, batch.u)
    log_lik = model.observation.log_prob(batch.x, model.emission(z, batch.u),
                                         batch.mask).sum((-1, -2))
    valid = batch.valid.to(z.dtype)
    kl = kl_diag_gaussians(q_mean, q_var, p_mean, p_var)
    log_p = diag_gaussian_log_prob(z, p_mean, p_var).sum(-1)
    log_q = diag_gaussian_log_prob(z, q_mean, q_var).sum(-1)
    return log_lik, (kl * valid[..., None]).sum(-2), ((log_p - log_q) * valid).sum(-1)


def test_no_flow_keeps_the_gaussian_posterior():
    """Without a flow the DKF is the Gaussian posterior written out step by step; the
    model's loop (dynvae.nn.combiner.Combiner.steps) reassociates the combiner's sums,
    so the two agree to rounding (float64)."""
    model, batch = small_model(0), small_batch()
    assert model.flow is None
    assert set(model.state_dict()) == set(small_model(0).state_dict())
    close = {"rtol": 1e-12, "atol": 1e-12}
    torch.manual_seed(3)
    terms = model.elbo(batch, 4)
    torch.manual_seed(3)
    log_lik, kl_dims, log_ratio = gaussian_posterior_reference(model, batch, 4)
    torch.testing.assert_close(terms.log_lik, log_lik.mean(0), **close)
    torch.testing.assert_close(terms.kl_dims, kl_dims.mean(0), **close)
    torch.testing.assert_close(terms.kl, kl_dims.mean(0).sum(-1), **close)
    torch.manual_seed(3)
    bound = model.log_likelihood_bound(batch, 5)
    torch.manual_seed(3)
    log_lik, _, log_ratio = gaussian_posterior_reference(model, batch, 5)
    torch.testing.assert_close(bound, log_mean_exp(log_lik + log_ratio), **close)


def test_the_flow_changes_q_and_its_kl_has_no_per_dimension_split():
    plain, flowed, batch = small_model(0), small_model(2), small_batch()
    missing, unexpected = flowed.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and missing and all(k.startswith("flow.") for k in missing)
    torch.manual_seed(4)
    a = plain.elbo(batch, 3)
    torch.manual_seed(4)
    b = flowed.elbo(batch, 3)
    assert b.kl_dims is None and not torch.allclose(a.kl, b.kl)
    assert free_bits_kl(b, batch.lengths.sum(), 0.0, "DKF") == b.kl.sum()
    with pytest.raises(ConfigError, match="free_bits"):
        free_bits_kl(b, batch.lengths.sum(), 0.1, "DKF")


@pytest.mark.parametrize("bad", [{"posterior_flow": -1}, {"posterior_flow": 1.5},
                                 {"posterior_flow": True}, {"flow_hidden": 0}])
def test_bad_flow_settings_are_one_config_error(bad):
    with pytest.raises(ConfigError) as info:
        DKFConfig(**bad)
    assert "\n" not in str(info.value)


def test_cli_trains_evaluates_and_reloads_a_flow_posterior(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--model", "dkf", "--dataset", "healing-digits",
                 "--dataset-option", "n_sequences=24", "--dataset-option", "length=4",
                 "--set", "posterior_flow=2", "--set", "flow_hidden=6",
                 "--set", "latent_dim=2", "--set", "encoder_hidden=8",
                 "--set", "transition_hidden=8", "--set", "emission_hidden=8",
                 "--set", "batch_size=6", "--set", "max_steps=3", "--set", "eval_every=3",
                 "--set", "progress=false", "--set", "n_predict_samples=4",
                 "--out", str(run)]) == 0
    config = json.loads((run / "config.json").read_text())["config"]["model"]
    assert config["posterior_flow"] == 2 and config["flow_hidden"] == 6
    curve = pd.read_csv(run / "metrics.csv")
    assert len(curve) == 3 and "kl_per_step" in curve.columns
    assert not any(c.startswith("kl_dim") for c in curve.columns)
    assert not (run / "plots" / "kl_per_dim.png").exists()
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["test_iwae_per_step"] >= metrics["test_elbo_per_step"] - 1.0
    assert all(math.isfinite(metrics[k]) for k in ("test_elbo_per_step",
                                                   "test_iwae_per_step"))
    assert main(["evaluate", str(run)]) == 0
    assert "log_likelihood" in capsys.readouterr().out
