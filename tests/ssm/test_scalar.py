"""The scalar-observation engine (dynvae.ssm.scalar) against the general sequential
filter and smoother on identical inputs: values, gradients, and FFBS moments."""

import math

import pytest
import torch

from dynvae.errors import DataError
from dynvae.ssm import LinearGaussianSSM, kalman_filter, rts_smoother
from dynvae.ssm import scalar as scalar_module
from dynvae.ssm.scalar import scalar_ffbs_sample, scalar_kalman_filter, scalar_rts_smoother
from dynvae.ssm.scalar_native import native_scalar_available

TV = {"transition_matrix", "transition_cov", "emission_matrix", "emission_cov"}


@pytest.fixture(autouse=True, params=["native", "torch"])
def backend(request, monkeypatch):
    """Every test runs with the C recursions (when they compile) and the torch loops."""
    if request.param == "native":
        if not native_scalar_available():
            pytest.skip("no C compiler: the native recursions are unavailable")
        monkeypatch.setattr(scalar_module, "_use_native", lambda like: True)
    else:
        monkeypatch.setattr(scalar_module, "_use_native", lambda like: False)
    return request.param


def spd(g, *shape, S):
    M = torch.randn(*shape, S, S, generator=g, dtype=torch.float64)
    return M @ M.transpose(-1, -2) / S + 0.1 * torch.eye(S, dtype=torch.float64)


def random_problem(S, batch=(3, 2), T=11, seed=0, time_varying=True):
    """A random stable LGSSM with one observed dim, data and a mask (some steps missing,
    one sequence with a missing first step)."""
    g = torch.Generator().manual_seed(seed)
    tshape = (*batch, T) if time_varying else batch
    A = 0.6 * torch.randn(*tshape, S, S, generator=g, dtype=torch.float64)
    model = LinearGaussianSSM(
        torch.randn(*batch, S, generator=g, dtype=torch.float64), spd(g, *batch, S=S), A,
        spd(g, *tshape, S=S), torch.randn(*tshape, 1, S, generator=g, dtype=torch.float64),
        0.05 + torch.rand(*tshape, 1, 1, generator=g, dtype=torch.float64),
        time_varying=TV if time_varying else frozenset())
    x = torch.randn(*batch, T, 1, generator=g, dtype=torch.float64)
    mask = torch.rand(*batch, T, 1, generator=g) > 0.3
    mask[0, 0, 0] = False
    return model, x, mask


@pytest.mark.parametrize("S", [1, 2, 3])
@pytest.mark.parametrize("time_varying", [True, False])
def test_filter_and_smoother_equal_the_general_engine(S, time_varying):
    model, x, mask = random_problem(S, time_varying=time_varying)
    want, got = rts_smoother(model, x, mask), scalar_rts_smoother(model, x, mask)
    for name in ("log_likelihood", "smoothed_mean", "smoothed_cov", "smoothed_cross_cov"):
        torch.testing.assert_close(getattr(got, name), getattr(want, name), rtol=1e-10,
                                   atol=1e-10)
    for a, b in zip(got.filtered, kalman_filter(model, x, mask), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_single_step_and_fully_missing_sequences():
    model, x, mask = random_problem(2, T=1)
    torch.testing.assert_close(scalar_rts_smoother(model, x, mask).smoothed_cov,
                               rts_smoother(model, x, mask).smoothed_cov)
    model, x, mask = random_problem(2)
    mask[1] = False                                       # a pure prediction
    torch.testing.assert_close(scalar_rts_smoother(model, x, mask).smoothed_mean,
                               rts_smoother(model, x, mask).smoothed_mean)


def test_gradients_equal_the_general_engine():
    model, x, mask = random_problem(2, batch=(2,), T=7, seed=3)
    leaves = {n: getattr(model, n).clone().requires_grad_() for n in
              ("initial_cov", "transition_matrix", "transition_cov", "emission_cov")}
    x = x.clone().requires_grad_()

    def objective(smoother):
        m = LinearGaussianSSM(model.initial_mean, leaves["initial_cov"],
                              leaves["transition_matrix"], leaves["transition_cov"],
                              model.emission_matrix, leaves["emission_cov"],
                              time_varying=TV)
        sm = smoother(m, x, mask)
        value = sm.log_likelihood.sum() + sm.smoothed_mean.pow(2).sum() \
            + sm.smoothed_cov.diagonal(dim1=-2, dim2=-1).log().sum()
        return torch.autograd.grad(value, [x, *leaves.values()])

    # a covariance's gradient is defined up to its antisymmetric part (the engines read
    # the symmetric input differently): compare symmetric parts
    sym = lambda g, name: g + g.transpose(-1, -2) if name.endswith("cov") else g
    names = ["x", *leaves]
    for name, a, b in zip(names, objective(scalar_rts_smoother), objective(rts_smoother),
                          strict=True):
        torch.testing.assert_close(sym(a, name), sym(b, name), rtol=1e-9, atol=1e-9)


def test_ffbs_paths_have_the_smoothed_moments_and_cross_covariances():
    model, x, mask = random_problem(2, batch=(2,), T=6, seed=5)
    sm = rts_smoother(model, x, mask)
    n = 40000
    z = scalar_ffbs_sample(model, scalar_kalman_filter(model, x, mask), n,
                           generator=torch.Generator().manual_seed(0))   # (n, B, T, S)
    centred = z - sm.smoothed_mean
    cov = torch.einsum("nbti,nbtj->btij", centred, centred) / n
    cross = torch.einsum("nbti,nbtj->btij", centred[:, :, 1:], centred[:, :, :-1]) / n
    var = sm.smoothed_cov.diagonal(dim1=-2, dim2=-1)
    # 5 Monte Carlo standard errors: sd(mean) = sqrt(var / n), sd(cov_ij) <= sqrt(2/n) var
    assert (centred.mean(0).abs() < 5 * (var / n).sqrt()).all()
    scale = var.max() * math.sqrt(2.0 / n)
    assert ((cov - sm.smoothed_cov).abs() < 5 * scale).all()
    assert ((cross - sm.smoothed_cross_cov[:, 1:]).abs() < 5 * scale).all()


def test_rejects_vector_observations_and_inputs():
    model, x, mask = random_problem(2)
    with pytest.raises(DataError, match="one observed dim"):
        scalar_kalman_filter(model, torch.cat([x, x], -1), torch.cat([mask, mask], -1))
    biased = LinearGaussianSSM(model.initial_mean, model.initial_cov,
                               model.transition_matrix, model.transition_cov,
                               model.emission_matrix, model.emission_cov,
                               emission_bias=torch.zeros(1, dtype=torch.float64),
                               time_varying=TV)
    with pytest.raises(DataError, match="no biases or inputs"):
        scalar_kalman_filter(biased, x, mask)
