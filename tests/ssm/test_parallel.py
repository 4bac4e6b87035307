"""Parallel (associative-scan) Kalman filter and smoother against the dense joint Gaussian
and against the sequential implementation."""

import pytest
import torch

from dynvae.ssm import (
    CompiledScan,
    EagerScan,
    parallel_kalman_filter,
    parallel_rts_smoother,
    rts_smoother,
)
from dynvae.ssm.parallel import filter_combine, smoother_combine
from dynvae.ssm.smallmat import BatchedLinalg, ScalarLinalg
from tests.reference.dense_lgssm import dense_posterior
from tests.ssm.lgssm_cases import constant_model, random_mask, rich_model


def assert_smoothers_equal(a, b, atol=1e-8):
    for name in ("log_likelihood", "smoothed_mean", "smoothed_cov", "smoothed_cross_cov"):
        torch.testing.assert_close(getattr(a, name), getattr(b, name), rtol=0, atol=atol,
                                   msg=name)
    for name in a.filtered._fields:
        torch.testing.assert_close(getattr(a.filtered, name), getattr(b.filtered, name),
                                   rtol=0, atol=atol, msg=name)


@pytest.mark.parametrize("smoother", [rts_smoother, parallel_rts_smoother])
def test_time_varying_model_with_biases_and_inputs_equals_dense(smoother):
    T, B = 9, 3
    model = rich_model(T)
    x = torch.randn(B, T, 2, dtype=torch.float64)
    u = torch.randn(B, T, 2, dtype=torch.float64)
    mask = random_mask((B, T, 2))
    out = smoother(model, x, mask, u)
    for b in range(B):
        ll, mean, cov, cross = dense_posterior(model, x[b], mask[b], u[b])
        torch.testing.assert_close(out.log_likelihood[b], ll, rtol=1e-10, atol=1e-9)
        torch.testing.assert_close(out.smoothed_mean[b], mean, rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(out.smoothed_cov[b], cov, rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(out.smoothed_cross_cov[b, 1:], cross, rtol=1e-9, atol=1e-9)
        # the filtered marginal at the last step is the smoothed one
        torch.testing.assert_close(out.filtered.filtered_mean[b, -1], mean[-1])


@pytest.mark.parametrize("T", [1, 2, 5, 64])
def test_parallel_equals_sequential_with_batch_dims(T):
    model = rich_model(T, batch=(2, 1))                     # model batch broadcasts with data
    x = torch.randn(2, 3, T, 2, dtype=torch.float64)
    u = torch.randn(2, 3, T, 2, dtype=torch.float64)
    mask = random_mask(x.shape, 0.3)
    assert_smoothers_equal(parallel_rts_smoother(model, x, mask, u),
                           rts_smoother(model, x, mask, u))


def test_parallel_filter_alone_and_reused_filter():
    model = constant_model()
    x = torch.randn(4, 30, 2, dtype=torch.float64)
    f = parallel_kalman_filter(model, x)
    s = parallel_rts_smoother(model, x, filtered=f)
    assert s.filtered is f
    assert_smoothers_equal(s, rts_smoother(model, x))


def test_scalar_and_batched_combines_agree():
    """The entry-by-entry combine used by CompiledScan equals the batched one."""
    g = torch.Generator().manual_seed(3)
    n, S = 50, 3
    rnd = lambda *s: torch.randn(n, *s, generator=g, dtype=torch.float64)
    psd = lambda: (lambda L: L @ L.mT)(rnd(S, S))
    elems = [(rnd(S, S), rnd(S), psd(), rnd(S), psd()) for _ in range(2)]
    ref = filter_combine(BatchedLinalg(), *elems)
    nested = lambda e: tuple([[m[:, i, j] for j in range(S)] for i in range(S)] if m.ndim == 3
                             else [m[:, i] for i in range(S)] for m in e)
    out = filter_combine(ScalarLinalg(), nested(elems[0]), nested(elems[1]))
    for r, o in zip(ref, out, strict=True):
        stacked = torch.stack([torch.stack(row, -1) for row in o], -2) if r.ndim == 3 \
            else torch.stack(o, -1)
        torch.testing.assert_close(stacked, r, rtol=1e-10, atol=1e-10)
    ref_s = smoother_combine(BatchedLinalg(), elems[0][:3], elems[1][:3])
    out_s = smoother_combine(ScalarLinalg(), nested(elems[0][:3]), nested(elems[1][:3]))
    torch.testing.assert_close(torch.stack([torch.stack(r, -1) for r in out_s[2]], -2), ref_s[2])


def test_compiled_scan_pipeline_without_compiling_equals_sequential():
    """CompiledScan's packing and entry-by-entry combines, run eagerly (min_size huge)."""
    model = rich_model(40)
    x = torch.randn(2, 40, 2, dtype=torch.float64)
    u = torch.randn(2, 40, 2, dtype=torch.float64)
    mask = random_mask(x.shape)
    out = parallel_rts_smoother(model, x, mask, u, method=CompiledScan(min_size=10**9))
    assert_smoothers_equal(out, rts_smoother(model, x, mask, u))


@pytest.mark.slow
def test_compiled_scan_equals_sequential():
    model = rich_model(300, batch=(2,))
    x = torch.randn(2, 300, 2, dtype=torch.float64)
    u = torch.randn(2, 300, 2, dtype=torch.float64)
    mask = random_mask(x.shape)
    out = parallel_rts_smoother(model, x, mask, u, method=CompiledScan(min_size=8))
    assert_smoothers_equal(out, rts_smoother(model, x, mask, u))


def test_eager_scan_is_the_default_and_differentiable():
    model = constant_model()
    A = model.transition_matrix.clone().requires_grad_(True)
    m = type(model)(**{**model.__dict__, "transition_matrix": A})
    x = torch.randn(20, 2, dtype=torch.float64)
    ll_par = parallel_rts_smoother(m, x, method=EagerScan()).log_likelihood
    (g_par,) = torch.autograd.grad(ll_par, A)
    (g_seq,) = torch.autograd.grad(rts_smoother(m, x).log_likelihood, A)
    torch.testing.assert_close(g_par, g_seq, rtol=1e-8, atol=1e-9)
