"""The numerical guard shared by the Kalman engines: a broken recursion raises
NumericalError naming the engine and the step; sound results, however unusual the data,
pass; and the sequential loop does not synchronise with the host once per step."""

import pytest
import torch

from dynvae.errors import NumericalError
from dynvae.ssm import (
    LinearGaussianSSM,
    kalman_filter,
    native_available,
    native_rts_smoother,
    parallel_kalman_filter,
    parallel_rts_smoother,
    rts_smoother,
)
from dynvae.ssm.guard import check_filter, check_smoother
from tests.ssm.lgssm_cases import constant_model, rich_model

DT = torch.float64
ENGINES = {"sequential Kalman filter": kalman_filter,
           "sequential RTS smoother": rts_smoother,
           "parallel Kalman filter": parallel_kalman_filter,
           "parallel RTS smoother": parallel_rts_smoother}
if native_available():
    ENGINES["native Kalman smoother"] = native_rts_smoother


def broken_model(T=40, bad_step=17):
    """Time-varying model whose transition noise turns NaN at one step."""
    model = rich_model(T, S=3, D=2, U=2, seed=4)
    Q = model.transition_cov.clone()
    Q[bad_step, 0, 0] = float("nan")
    return LinearGaussianSSM(**{**model.__dict__, "transition_cov": Q}), T


@pytest.mark.parametrize("name", list(ENGINES))
def test_non_finite_moments_name_the_engine_and_the_step(name):
    model, T = broken_model()
    g = torch.Generator().manual_seed(0)
    x, u = torch.randn(T, 2, generator=g, dtype=DT), torch.randn(T, 2, generator=g, dtype=DT)
    with pytest.raises(NumericalError, match=r"(Kalman|RTS).*at step 17 \(sequence 0\)") as err:
        ENGINES[name](model, x, None, u)
    assert name.split()[0] in str(err.value)


def test_exploding_smoothed_moments_are_caught_at_their_step():
    model = constant_model(S=3, D=2)
    x = torch.randn(4, 50, 2, generator=torch.Generator().manual_seed(1), dtype=DT)
    sm = rts_smoother(model, x)
    mask = torch.ones_like(x, dtype=torch.bool)
    check_smoother("test", model, mask, sm)                     # sound: passes
    mean = sm.smoothed_mean.clone()
    mean[2, 31, 1] *= 1e40                                      # a 1e84-style blow-up
    with pytest.raises(NumericalError, match=r"test: smoothed mean .* step 31 \(sequence 2\)"):
        check_smoother("test", model, mask, sm._replace(smoothed_mean=mean))
    cov = sm.smoothed_cov.clone()
    cov[0, 12] *= 1e3                                          # variance above the prediction
    with pytest.raises(NumericalError, match=r"smoothed covariance .* step 12 \(sequence 0\)"):
        check_smoother("test", model, mask, sm._replace(smoothed_cov=cov))
    f = sm.filtered
    neg = f.filtered_cov.clone()
    neg[1, 5] = -neg[1, 5]                                     # negative variances
    with pytest.raises(NumericalError, match=r"filtered covariance .* step 5 \(sequence 1\)"):
        check_filter("test", model, mask, f._replace(filtered_cov=neg))


@pytest.mark.parametrize("fn", [kalman_filter, parallel_kalman_filter, rts_smoother,
                                parallel_rts_smoother])
def test_huge_outliers_are_not_flagged(fn):
    """Innovations of ~1e10 standard deviations (state and noise variances 1e-12, two
    outliers): unusual data, sound arithmetic. The mean bound grows with the innovations
    (through the log-likelihood), so nothing is raised."""
    tiny = 1e-12 * torch.eye(2, dtype=DT)
    model = LinearGaussianSSM(**{**constant_model(S=2, D=1).__dict__, "initial_cov": tiny,
                                 "transition_cov": tiny,
                                 "emission_cov": torch.full((1, 1), 1e-12, dtype=DT)})
    x = torch.zeros(30, 1, dtype=DT)
    x[7], x[20] = 1e4, -3e3
    out = fn(model, x)
    f = out if hasattr(out, "filtered_mean") else out.filtered
    assert torch.isfinite(f.filtered_mean).all() and float(f.log_likelihood) < -1e19


def test_sequential_filter_synchronises_once_per_call_not_per_step(monkeypatch):
    """Reading a tensor's truth value on the host (bool/item) blocks on a GPU; the loop
    must not do it per step (the guard checks once at the end)."""
    calls = []
    real_bool, real_item = torch.Tensor.__bool__, torch.Tensor.item
    monkeypatch.setattr(torch.Tensor, "__bool__", lambda s: calls.append(1) or real_bool(s))
    monkeypatch.setattr(torch.Tensor, "item", lambda s: calls.append(1) or real_item(s))
    model = constant_model(S=3, D=1)
    for T in (20, 80):
        calls.clear()
        rts_smoother(model, torch.randn(2, T, 1, dtype=DT))
        n = len(calls)
        assert n <= 8, (T, n)
