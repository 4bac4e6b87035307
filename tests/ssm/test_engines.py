"""The Kalman engines and the ``auto`` choice: which engine serves which request, and
that the auto engine's values and gradients equal autograd through the parallel scan."""

import pytest
import torch

from dynvae.errors import ConfigError
from dynvae.ssm import (
    ENGINES,
    AutoKalman,
    FisherKalman,
    LinearGaussianSSM,
    NativeKalman,
    ParallelKalman,
    SequentialKalman,
    native,
)
from tests.ssm.lgssm_cases import random_mask, rich_model

DT = torch.float64
needs_native = pytest.mark.skipif(not native.native_available(), reason="no C compiler")


COVARIANCES = {"initial_cov", "transition_cov", "emission_cov"}


def leaf_model(T=25, batch=(2,)):
    """A rich time-varying model whose tensors are leaves that require grad; covariances
    are built as (C + C^T) / 2 of a leaf, so only their symmetric part has a gradient."""
    model = rich_model(T, S=3, D=2, U=2, batch=batch, seed=7)
    leaves = {k: v.detach().clone().requires_grad_() for k, v in model.__dict__.items()
              if k != "time_varying" and v is not None}
    kw = {k: 0.5 * (v + v.transpose(-1, -2)) if k in COVARIANCES else v
          for k, v in leaves.items()}
    return LinearGaussianSSM(**kw, time_varying=model.time_varying), list(leaves.values())


def data(T=25, batch=(2,)):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(*batch, T, 2, generator=g, dtype=DT)
    u = torch.randn(*batch, T, 2, generator=g, dtype=DT)
    return x, random_mask(x.shape, seed=5), u


@needs_native
def test_auto_picks_the_fastest_valid_engine(monkeypatch):
    auto = AutoKalman()
    model, _ = leaf_model()
    x, _, u = data()
    assert isinstance(auto.choose(model, x, u), ParallelKalman)            # moments + grad
    assert isinstance(auto.choose(model, x, u, likelihood_only=True), FisherKalman)
    assert isinstance(AutoKalman(higher_order=True).choose(model, x, u, likelihood_only=True),
                      ParallelKalman)
    with torch.no_grad():
        assert isinstance(auto.choose(model, x, u), NativeKalman)
    plain = rich_model(25, S=3, D=2, U=2, batch=(2,), seed=7)
    assert isinstance(auto.choose(plain, x, u, likelihood_only=True), NativeKalman)
    monkeypatch.setattr(native, "native_available", lambda: False)
    assert isinstance(AutoKalman().choose(plain, x, u), ParallelKalman)   # no C compiler
    assert "sequential" in ENGINES and not any(
        isinstance(AutoKalman().choose(m, x, u, lo), SequentialKalman)
        for m in (plain, model) for lo in (False, True))


@needs_native
def test_auto_likelihood_and_gradients_equal_autograd_through_the_scan():
    """Fisher gradients (the auto engine's choice) with biases, inputs u, masks and batch
    dims, with respect to every model tensor, x and u, against autograd of the scan."""
    results = []
    for engine in (ParallelKalman(), AutoKalman()):
        model, leaves = leaf_model()
        x, mask, u = data()
        x.requires_grad_()
        u.requires_grad_()
        ll = engine.log_likelihood(model, x, mask, u)
        grads = torch.autograd.grad(ll.sum(), leaves + [x, u], allow_unused=True)
        results.append((ll.detach(), grads))
    (ll_ref, g_ref), (ll_auto, g_auto) = results
    torch.testing.assert_close(ll_auto, ll_ref, rtol=1e-12, atol=1e-10)
    for a, r in zip(g_auto, g_ref, strict=True):
        if r is None:
            assert a is None or float(a.abs().max()) == 0.0
            continue
        torch.testing.assert_close(a, r, rtol=1e-8, atol=1e-9)


@needs_native
def test_second_derivatives_refuse_fisher_and_work_with_higher_order():
    def hessian_diag(engine):
        model, leaves = leaf_model(T=12, batch=())
        x, mask, u = data(T=12, batch=())
        ll = engine.log_likelihood(model, x, mask, u)
        (g,) = torch.autograd.grad(ll, [leaves[0]], create_graph=True)    # d/d m0
        return torch.stack([torch.autograd.grad(g[i], leaves[0], retain_graph=True)[0][i]
                            for i in range(g.shape[-1])])
    with pytest.raises(ConfigError, match="first derivatives only.*higher_order=True"):
        hessian_diag(AutoKalman())
    torch.testing.assert_close(hessian_diag(AutoKalman(higher_order=True)),
                               hessian_diag(SequentialKalman()), rtol=1e-9, atol=1e-12)


@needs_native
@pytest.mark.parametrize("name", ["auto", "native", "fisher", "parallel", "sequential"])
def test_every_engine_gives_the_same_smoother(name):
    model = rich_model(25, S=3, D=2, U=2, batch=(2,), seed=7)
    x, mask, u = data()
    ref = SequentialKalman().smoother(model, x, mask, u)
    out = ENGINES[name]().smoother(model, x, mask, u)
    for field in ("log_likelihood", "smoothed_mean", "smoothed_cov", "smoothed_cross_cov"):
        torch.testing.assert_close(getattr(out, field), getattr(ref, field), rtol=1e-9,
                                   atol=1e-10)


def test_defaults_are_auto():
    """Observation 2: StateSpaceGP and `dynvae gp` default to the auto engine (StateSpaceGP
    used to default to the Python-loop engine: ~15 s per likelihood and gradient at
    T = 5000); the GP-VAE, whose sites observe one dimension per latent channel, to the
    scalar engine made for that case."""
    from dynvae.cli import build_parser
    from dynvae.gp import StateSpaceGP
    from dynvae.gp.kernels import Matern52
    from dynvae.models.gpvae import GPVAEConfig
    assert isinstance(StateSpaceGP(Matern52()).engine, AutoKalman)
    assert GPVAEConfig().engine == "scalar"
    args = build_parser().parse_args(["gp", "--dataset", "co2", "--out", "x"])
    assert args.engine == "auto"
