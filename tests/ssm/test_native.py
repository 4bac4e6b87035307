"""The C Kalman back end against the sequential torch filter/smoother and pykalman."""

import numpy as np
import pytest
import torch

from dynvae.errors import DataError, NumericalError
from dynvae.ssm import (
    LinearGaussianSSM,
    kalman_filter,
    native_kalman_filter,
    native_rts_smoother,
    rts_smoother,
)
from dynvae.ssm.native import NativeUnavailable, find_c_compiler, native_available
from tests.ssm.lgssm_cases import constant_model, pykalman_filter, random_mask, rich_model

try:
    find_c_compiler()
    NO_COMPILER = None
except NativeUnavailable as err:
    NO_COMPILER = str(err)
pytestmark = pytest.mark.skipif(NO_COMPILER is not None, reason=f"no C compiler: {NO_COMPILER}")

TOL = dict(rtol=1e-10, atol=1e-10)


def assert_filters_equal(out, ref):
    for name in ref._fields:
        torch.testing.assert_close(getattr(out, name), getattr(ref, name), **TOL, msg=name)


def assert_smoothers_equal(out, ref):
    for name in ("log_likelihood", "smoothed_mean", "smoothed_cov", "smoothed_cross_cov"):
        torch.testing.assert_close(getattr(out, name), getattr(ref, name), **TOL, msg=name)
    assert_filters_equal(out.filtered, ref.filtered)


def test_available_after_compiling():
    assert native_available()


# (3, 2), (1, 1), (4, 1) use the size-specialised code, (5, 3) the generic loops
@pytest.mark.parametrize("S,D", [(3, 2), (1, 1), (4, 1), (5, 3)])
def test_rich_model_with_masks_batch_inputs_and_padding(S, D):
    T, batch = 30, (2, 3)
    model = rich_model(T, S=S, D=D, U=2, batch=batch, seed=S)
    g = torch.Generator().manual_seed(10 + S)
    x = torch.randn(*batch, T, D, generator=g, dtype=torch.float64)
    u = torch.randn(*batch, T, 2, generator=g, dtype=torch.float64)
    mask = random_mask(x.shape, seed=S)
    mask[0, 1, 4] = False                                      # a fully missing step
    mask[1, 2, 20:] = False                                    # trailing padding
    mask[1, 0, 0] = False                                      # first step missing
    x = torch.where(mask, x, torch.full_like(x, float("nan")))  # NaN at missing entries
    ref = rts_smoother(model, torch.nan_to_num(x), mask, u)
    assert_smoothers_equal(native_rts_smoother(model, x, mask, u), ref)
    assert_filters_equal(native_kalman_filter(model, x, mask, u), ref.filtered)


def test_shared_parameters_with_batched_data_and_batched_parameters_with_shared_data():
    model = constant_model(S=4, D=2, seed=5)
    x = torch.randn(3, 25, 2, dtype=torch.float64)
    assert_smoothers_equal(native_rts_smoother(model, x), rts_smoother(model, x))
    # per-sequence Q (batch dim on a parameter only); x has no batch dim
    Q = model.transition_cov * torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64)[:, None, None]
    m2 = LinearGaussianSSM(**{**model.__dict__, "transition_cov": Q})
    out = native_rts_smoother(m2, x[0])
    assert out.smoothed_mean.shape == (3, 25, 4)
    assert_smoothers_equal(out, rts_smoother(m2, x[0].expand(3, 25, 2)))
    assert_smoothers_equal(native_rts_smoother(m2, x), rts_smoother(m2, x))


def test_constant_biases_and_input_gains():
    S, D, U, T = 3, 2, 2, 20
    base = constant_model(S, D, seed=2)
    g = torch.Generator().manual_seed(4)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)
    model = LinearGaussianSSM(**{**base.__dict__, "transition_bias": r(S),
                                 "emission_bias": r(D), "transition_input": r(S, U),
                                 "emission_input": r(D, U)})
    x, u = r(2, T, D), r(2, T, U)
    mask = random_mask(x.shape, seed=3)
    assert_smoothers_equal(native_rts_smoother(model, x, mask, u),
                           rts_smoother(model, x, mask, u))


def test_float32_computed_in_float64_and_cast_back():
    model = constant_model(seed=1)
    x = torch.randn(2, 15, 2, dtype=torch.float64)
    out = native_kalman_filter(model.to(dtype=torch.float32), x.float())
    assert out.filtered_mean.dtype == torch.float32
    ref = kalman_filter(model, x)                              # float64 reference
    torch.testing.assert_close(out.filtered_mean, ref.filtered_mean.float(), rtol=1e-4,
                               atol=1e-4)


def test_equals_pykalman():
    pytest.importorskip("pykalman")
    model = constant_model(S=3, D=2, seed=0)
    x = torch.randn(25, 2, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    kf = pykalman_filter(model)
    sm, sc = kf.smooth(x.numpy())
    out = native_rts_smoother(model, x)
    as64 = lambda a: torch.as_tensor(np.asarray(a, dtype=np.float64))
    torch.testing.assert_close(out.smoothed_mean, as64(sm), rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(out.smoothed_cov, as64(sc), rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(out.log_likelihood, torch.tensor(kf.loglikelihood(x.numpy()),
                                                                dtype=torch.float64),
                               rtol=1e-10, atol=1e-9)


def test_requires_grad_is_refused_with_a_clear_error():
    model = constant_model()
    x = torch.randn(10, 2, dtype=torch.float64, requires_grad=True)
    with pytest.raises(DataError, match="does not support autograd.*kalman_filter"):
        native_rts_smoother(model, x)
    A = model.transition_matrix.clone().requires_grad_(True)
    m = LinearGaussianSSM(**{**model.__dict__, "transition_matrix": A})
    with pytest.raises(DataError, match="inference-only"):
        native_kalman_filter(m, x.detach())
    with torch.no_grad():                                      # allowed: nothing to differentiate
        assert_filters_equal(native_kalman_filter(m, x), kalman_filter(model, x.detach()))


def test_bad_inputs_are_clear_errors():
    model = constant_model(S=3, D=2)
    with pytest.raises(DataError, match="channels"):
        native_rts_smoother(model, torch.randn(10, 3, dtype=torch.float64))
    with pytest.raises(DataError, match="mask shape"):
        native_rts_smoother(model, torch.randn(10, 2, dtype=torch.float64),
                            mask=torch.ones(9, 2, dtype=torch.bool))
    bad = LinearGaussianSSM(**{**model.__dict__, "emission_cov": -torch.eye(2,
                                                                            dtype=torch.float64)})
    with pytest.raises(NumericalError, match="not positive definite.*step 0"):
        native_kalman_filter(bad, torch.randn(10, 2, dtype=torch.float64))


def test_lgssm_native_inference_equals_sequential_and_falls_back_for_gradients():
    from dynvae import SequenceBatch
    from dynvae.data import synthetic_lgssm
    from dynvae.models.lgssm import INFERENCE, LGSSM, Config

    batch = synthetic_lgssm(n=3, T=12, S=2, D=3, missing=0.3, seed=2).dataset.to_batch(
        dtype=torch.float64)
    u = torch.randn(batch.batch_size, batch.n_steps, 1, dtype=torch.float64)
    batch = SequenceBatch(batch.x, batch.mask, batch.t, batch.lengths, u)
    config = Config(state_dim=2, transition="linear", emission="linear", initial="learned",
                    transition_bias=True, emission_bias=True)
    outputs = []
    for name in ("sequential", "native"):
        torch.manual_seed(0)
        model = LGSSM(config, 3, 1)
        g = torch.Generator().manual_seed(4)
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(0.3 * torch.randn(p.shape, generator=g, dtype=p.dtype))
        model.inference = INFERENCE[name]
        model.fit_em(batch, n_iter=2, progress=False)             # no_grad: the C path
        with torch.no_grad():
            rec = model.reconstruct(batch)
            ll_nograd = model.log_likelihood(batch)
        ll = model.log_likelihood(batch)                          # needs grad: fallback
        (grad,) = torch.autograd.grad(ll.sum(), next(model.parameters()))
        outputs.append((ll_nograd, ll, rec.mean, rec.std, grad))
    for a, b in zip(*outputs, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-9)


@pytest.fixture
def fresh_library(monkeypatch, tmp_path):
    """An empty cache and no loaded library; the loaded one is restored afterwards."""
    from dynvae.ssm import native
    monkeypatch.setenv("DYNVAE_CACHE_DIR", str(tmp_path))
    native._library.cache_clear()
    yield tmp_path
    monkeypatch.undo()
    native._library.cache_clear()


def test_compiled_library_is_cached_and_reused():
    from dynvae.ssm import native
    assert native_available()
    built = {p: p.stat().st_mtime_ns for p in native._cache_dir().glob("kalman-*")}
    assert built, "no cached library"
    native._library.cache_clear()
    assert native_available()                                   # loads, does not recompile
    assert {p: p.stat().st_mtime_ns for p in native._cache_dir().glob("kalman-*")} == built


def test_missing_or_failing_compiler_is_a_clear_error(fresh_library, monkeypatch):
    monkeypatch.setenv("CC", "false")                           # a "compiler" that always fails
    assert not native_available()
    with pytest.raises(NativeUnavailable, match="compiling kalman.c with false failed"):
        native_kalman_filter(constant_model(), torch.zeros(3, 2, dtype=torch.float64))
    monkeypatch.setenv("CC", "no-such-compiler")
    monkeypatch.setenv("PATH", str(fresh_library))               # nothing to find on PATH
    with pytest.raises(NativeUnavailable, match="no C compiler found"):
        find_c_compiler()


def test_simd_blocks_of_eight_with_per_sequence_parameters_and_masks():
    """12 sequences with their own time-varying parameters: one block of 8 SIMD lanes plus
    4 single sequences, each against the sequential torch smoother."""
    T, batch = 30, (3, 4)
    model = rich_model(T, S=3, D=2, U=2, batch=batch, seed=11)
    g = torch.Generator().manual_seed(12)
    x = torch.randn(*batch, T, 2, generator=g, dtype=torch.float64)
    u = torch.randn(*batch, T, 2, generator=g, dtype=torch.float64)
    mask = random_mask(x.shape, seed=13)
    mask[2, 3, 10:] = False                                    # padding of the last sequence
    assert_smoothers_equal(native_rts_smoother(model, x, mask, u),
                           rts_smoother(model, x, mask, u))


def test_shared_covariances_with_per_sequence_means_offsets_and_one_mask():
    """Shared P0, A, Q, H, R and one missingness pattern: covariances are computed once
    (returned broadcast over the batch); initial means and input offsets stay per sequence."""
    S, D, U, T, B = 3, 2, 2, 40, 11
    base = constant_model(S, D, seed=6)
    g = torch.Generator().manual_seed(7)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)
    model = LinearGaussianSSM(**{**base.__dict__, "initial_mean": r(B, S),
                                 "transition_input": r(S, U), "emission_input": r(D, U)})
    x, u = r(B, T, D), r(B, T, U)
    mask = random_mask((T, D), seed=8).expand(B, T, D)
    out = native_rts_smoother(model, x, mask, u)
    assert out.smoothed_cov.stride(0) == 0                     # one covariance for all
    assert_smoothers_equal(out, rts_smoother(model, x, mask, u))


@pytest.mark.parametrize("B", [1, 11])
def test_guard_names_the_sequence_and_step_in_both_batched_paths(B):
    model = constant_model(S=3, D=1, seed=2)
    T = 30
    Q = model.transition_cov.expand(T, 3, 3).clone()
    Q[21] = -10.0 * torch.eye(3, dtype=torch.float64)          # predicted variances < 0
    bad = LinearGaussianSSM(**{**model.__dict__, "transition_cov": Q,
                               "time_varying": {"transition_cov"}})
    x = torch.randn(B, T, 1, dtype=torch.float64)
    with pytest.raises(NumericalError, match=r"native (Kalman filter|RTS smoother): .*step 21"):
        native_rts_smoother(bad, x)
    # per-sequence parameters (the SIMD path): only sequence 9 breaks
    if B == 11:
        Qb = model.transition_cov.expand(B, T, 3, 3).clone()
        Qb[9, 17] = float("nan")
        bad = LinearGaussianSSM(**{**model.__dict__, "transition_cov": Qb,
                                   "time_varying": {"transition_cov"}})
        with pytest.raises(NumericalError, match=r"step 17 \(sequence 9\)"):
            native_kalman_filter(bad, x)
