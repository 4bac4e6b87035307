"""KVAE against the dense joint-Gaussian oracle (tests/reference/dense_lgssm.py): with an
identity encoder and decoder and K = 1 it is an LGSSM over x, so its bound, imputations
and forecasts are those of the LGSSM; with K > 1 the Kalman likelihood of the pseudo-
observations under history-dependent matrices equals the dense one; and each part of the
model sees only what its factorisation allows."""

import math

import pytest
import torch

from dynvae.data.batch import SequenceBatch
from dynvae.models.kvae import KVAE, KVAEConfig
from dynvae.nn.dynamics_mixture import DynamicsMixture
from dynvae.ssm import LinearGaussianSSM
from tests.reference.dense_lgssm import dense_posterior

F64 = torch.float64
D, S, T = 2, 3, 7
LENGTHS = torch.tensor([7, 5, 6])
MISSING_FRAMES = [(0, 2), (0, 3), (1, 1), (2, 4)]        # whole frames without observations
TINY = -40.0                                               # softplus(-40) ~ 4e-18


def frame_batch(U: int = 0, seed: int = 0) -> SequenceBatch:
    """3 sequences, padding, whole frames missing (the LGSSM's own kind of missingness)."""
    g = torch.Generator().manual_seed(seed)
    valid = torch.arange(T)[None] < LENGTHS[:, None]
    mask = valid[..., None].expand(3, T, D).clone()
    for b, t in MISSING_FRAMES:
        mask[b, t] = False
    x = torch.where(mask, torch.randn(3, T, D, generator=g, dtype=F64), 0.0)
    u = torch.randn(3, T, U, generator=g, dtype=F64) if U else None
    return SequenceBatch(x, mask, torch.arange(T, dtype=F64).expand(3, T), LENGTHS, u)


def identity_kvae(U: int = 0, engine: str = "parallel", **overrides) -> KVAE:
    """pseudo_dim = D, affine encoder/decoder set to the identity with variance ~1e-12."""
    config = KVAEConfig(state_dim=S, pseudo_dim=D, n_matrices=1, encoder_hidden=(),
                        emission_hidden=(), min_var=1e-12, engine=engine, **overrides)
    torch.manual_seed(0)
    model = KVAE(config, D, U).to(F64)
    eye = torch.eye(D, dtype=F64)
    with torch.no_grad():
        enc = model.encoder_head
        enc.mean.weight.zero_()
        enc.mean.weight[:, :D] = eye
        enc.mean.bias.zero_()
        enc.variance.weight.zero_()
        enc.variance.bias.fill_(TINY)
        dec = model.observation.head
        dec.mean.weight.copy_(eye)
        dec.mean.bias.zero_()
        dec.variance.raw.fill_(TINY)
        angle = torch.tensor(0.4, dtype=F64)
        model.dynamics.transition[0] = 0.9 * torch.tensor(
            [[torch.cos(angle), -torch.sin(angle), 0.0], [torch.sin(angle), torch.cos(angle),
                                                          0.0], [0.0, 0.3, 0.5]], dtype=F64)
        model.initial_mean.copy_(torch.tensor([0.5, -0.3, 0.1], dtype=F64))
        model.raw_initial_var.copy_(torch.tensor([0.2, 0.9, -0.4], dtype=F64))
    return model


def lgssm_of(model: KVAE) -> LinearGaussianSSM:
    """The LGSSM over x that an identity KVAE with K = 1 is, from its raw parameters."""
    q, r, p0 = model.noise_variances()
    dyn = model.dynamics
    return LinearGaussianSSM(model.initial_mean, torch.diag(p0), dyn.transition[0],
                             torch.diag(q), dyn.emission[0], torch.diag(r),
                             transition_input=None if dyn.control is None else dyn.control[0])


def dense(model: KVAE, batch: SequenceBatch, b: int, steps: int | None = None):
    n = int(batch.lengths[b]) if steps is None else steps
    u = None if batch.u is None else batch.u[b, :n]
    with torch.no_grad():
        return dense_posterior(lgssm_of(model), batch.x[b, :n], batch.mask[b, :n], u)


@pytest.mark.parametrize("engine", ["parallel", "sequential"])
@pytest.mark.parametrize("U", [0, 1])
def test_identity_kvae_is_the_lgssm_exact_log_likelihood(engine, U):
    model, batch = identity_kvae(U, engine), frame_batch(U)
    log_px = torch.stack([dense(model, batch, b)[0] for b in range(3)])
    with torch.no_grad():
        exact = model.pseudo_log_likelihood(batch.x, batch.mask.any(-1), batch.u)
    torch.testing.assert_close(exact, log_px, rtol=1e-10, atol=1e-10)
    # the bound: log p(x | a) and log q(a | x) cancel (equal variances), a = x + 1e-6 noise
    torch.manual_seed(1)
    terms = model.elbo(batch, n_samples=3)
    torch.testing.assert_close(terms.elbo(), log_px, rtol=0, atol=1e-4)
    torch.testing.assert_close(model.log_likelihood_bound(batch, 4), log_px, rtol=0, atol=1e-4)


def test_missing_frames_are_imputed_by_the_smoother():
    model, batch = identity_kvae(), frame_batch(seed=2)
    model.config.n_predict_samples = 4000
    torch.manual_seed(2)
    rec = model.reconstruct(batch)
    C, R = model.dynamics.emission[0].detach(), model.noise_variances()[1].detach()
    for b, t in MISSING_FRAMES:
        _, mean, cov, _ = dense(model, batch, b)
        want_mean = C @ mean[t]
        want_std = (torch.diagonal(C @ cov[t] @ C.T) + R + 2e-12).sqrt()
        se = want_std / math.sqrt(4000)
        assert bool(((rec.mean[b, t] - want_mean).abs() < 5 * se).all()), (b, t)
        torch.testing.assert_close(rec.std[b, t], want_std, rtol=0.06, atol=0)
    observed = batch.mask
    torch.testing.assert_close(rec.mean[observed], batch.x[observed], rtol=0, atol=1e-4)
    assert float(rec.std[observed].max()) < 1e-4


def test_forecasts_roll_the_filtered_state_forward():
    """Mean C A^k m_{L|L} (+ inputs), variance C (A^k P A^k' + sum of propagated Q) C' + R."""
    model, batch = identity_kvae(U=1), frame_batch(U=1, seed=3)
    model.config.n_predict_samples = 4000
    t_last = (LENGTHS - 1).to(F64)[:, None]
    u_future = torch.randn(3, 3, 1, dtype=F64, generator=torch.Generator().manual_seed(4))
    torch.manual_seed(3)
    fc = model.forecast(batch, t_last + torch.tensor([[1.0, 2.0, 3.0]], dtype=F64), u_future)
    ssm = lgssm_of(model)
    A, C, Bu = (v.detach() for v in (ssm.transition_matrix, ssm.emission_matrix,
                                      ssm.transition_input))
    Q, R = ssm.transition_cov.detach(), ssm.emission_cov.detach()
    for b in range(3):
        n = int(LENGTHS[b])
        _, mean, cov, _ = dense(model, batch, b, steps=n)       # filtered = smoothed at n - 1
        m, P = mean[-1], cov[-1]
        for h in range(3):
            m, P = A @ m + Bu @ u_future[b, h], A @ P @ A.T + Q
            want_std = (torch.diagonal(C @ P @ C.T + R) + 2e-12).sqrt()
            se = want_std / math.sqrt(4000)
            assert bool(((fc.mean[b, h] - C @ m).abs() < 5 * se).all()), (b, h)
            torch.testing.assert_close(fc.std[b, h], want_std, rtol=0.06, atol=0)


def test_history_dependent_matrices_give_the_dense_likelihood_of_the_pseudo_observations():
    """K = 3: A_t, C_t mixed by the LSTM of a_{0:t-1}; given a, log p(a_O) from the Kalman
    filter equals the dense Gaussian density of the LGSSM with those time-varying matrices."""
    torch.manual_seed(5)
    model = KVAE(KVAEConfig(state_dim=S, pseudo_dim=2, n_matrices=3, dynamics_hidden=4), D,
                 1).to(F64)
    batch = frame_batch(U=1, seed=5)
    a = torch.randn(3, T, 2, dtype=F64)
    observed = batch.mask.any(-1)
    with torch.no_grad():
        got = model.pseudo_log_likelihood(a, observed, batch.u)
        ssm, mask = model.pseudo_model(a, observed, batch.u)
        for b in range(3):
            n = int(LENGTHS[b])
            one = LinearGaussianSSM(
                ssm.initial_mean, ssm.initial_cov, ssm.transition_matrix[b, :n],
                ssm.transition_cov, ssm.emission_matrix[b, :n], ssm.emission_cov,
                transition_bias=ssm.transition_bias[b, :n],
                time_varying={"transition_matrix", "emission_matrix", "transition_bias"})
            want = dense_posterior(one, a[b, :n], mask[b, :n])[0]
            torch.testing.assert_close(got[b], want, rtol=1e-10, atol=1e-10)


def test_the_weights_see_only_the_observed_past_and_the_encoder_one_frame():
    torch.manual_seed(6)
    model = KVAE(KVAEConfig(state_dim=S, pseudo_dim=2, n_matrices=3), D).to(F64)
    a = torch.randn(2, T, 2, dtype=F64)
    observed = torch.ones(2, T, dtype=torch.bool)
    observed[0, 4] = False
    weights = lambda a: model.dynamics.weights(DynamicsMixture.feed(a, observed))[0]
    with torch.no_grad():
        alpha = weights(a)
        later = a.clone()
        later[:, 3] += 1.0
        moved = weights(later)
        torch.testing.assert_close(moved[:, :4], alpha[:, :4], rtol=0, atol=0)
        assert not torch.allclose(moved[:, 4], alpha[:, 4])
        hidden = a.clone()
        hidden[0, 4] += 1.0                                    # a frame without observations
        torch.testing.assert_close(weights(hidden), alpha, rtol=0, atol=0)
        batch = frame_batch()
        mean, var, _ = model.encode(batch)
        x = batch.x.clone()
        x[0, 5] += 1.0
        mean2, var2, _ = model.encode(SequenceBatch(x, batch.mask, batch.t, batch.lengths))
        changed = (mean2 != mean).any(-1) | (var2 != var).any(-1)
        assert changed.nonzero().tolist() == [[0, 5]]


def test_engines_agree_and_one_matrix_needs_no_weight_network():
    batch = frame_batch(U=1, seed=7)
    values = []
    for engine in ("parallel", "sequential"):
        torch.manual_seed(7)
        model = KVAE(KVAEConfig(state_dim=S, engine=engine), D, 1).to(F64)
        torch.manual_seed(8)
        values.append(model.elbo(batch, 2))
    for a, b in zip(*values, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)
    single = KVAE(KVAEConfig(n_matrices=1), D)
    names = [name for name, _ in single.named_parameters() if name.startswith("dynamics.")]
    assert sorted(names) == ["dynamics.emission", "dynamics.transition"]
