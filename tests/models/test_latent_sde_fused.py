"""The latent SDE's fused posterior (one block network for both drifts, the diffusion
evaluated once a step) against GirsanovKL of the separate networks, in float64: the
same ELBO, the same gradients, the same log-ratio paths, on shared and per-sequence
grids, with one step per interval or several, for drifts of 0, 1 and 2 hidden layers."""

import dataclasses

import pytest
import torch

from dynvae.data.batch import SequenceBatch
from dynvae.models.latent_sde import (
    FusedPosterior,
    LatentSDE,
    LatentSDEConfig,
    interval_context,
    interval_rows,
)
from dynvae.sde import GirsanovKL

Z, D, B, T = 3, 2, 4, 9


def separate(model: LatentSDE):
    """posterior_sde as GirsanovKL of the model's own networks, one by one."""
    def build(times, contexts):
        lookup = interval_context(times, contexts)
        return GirsanovKL(
            lambda t, z: model.posterior_drift(torch.cat([z, lookup(t)], -1)),
            lambda t, z: model.prior_drift(z), lambda t, z: model.diffusion(z),
            lambda t, z: model.diffusion.value_and_derivative(z), per_dimension=True)
    return build


def batch(shared: bool, ragged: bool) -> SequenceBatch:
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(B, T, D, generator=gen, dtype=torch.float64)
    x[torch.rand(B, T, D, generator=gen, dtype=torch.float64) < 0.2] = float("nan")
    t = torch.cumsum(torch.rand(B, T, generator=gen, dtype=torch.float64) + 0.2, 1)
    b = SequenceBatch.from_tensor(x, t=t[0] if shared else t)
    if not ragged:
        return b
    lengths = torch.tensor([T, T - 3, T, 5])
    valid = (torch.arange(T)[None, :] < lengths[:, None])[..., None]
    return dataclasses.replace(b, lengths=lengths, mask=b.mask & valid,
                               x=torch.where(valid, b.x, torch.zeros_like(b.x)))


def elbo_and_grads(model: LatentSDE, b: SequenceBatch, fused: bool, k: int = 2):
    if not fused:
        model.posterior_sde = separate(model)
    try:
        model.zero_grad()
        torch.manual_seed(5)
        terms = model.elbo(b, k, z0_noise=torch.randn(k, B, Z, dtype=torch.float64))
        loss = terms.loss()
        loss.backward()
    finally:
        model.__dict__.pop("posterior_sde", None)
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()
                           if p.grad is not None}


@pytest.mark.parametrize("hidden", [(16, 16), (8,), ()])
@pytest.mark.parametrize("grid", ["shared", "per-row", "ragged"])
@pytest.mark.parametrize("dt", [None, 0.3])
@pytest.mark.parametrize("solver", ["euler", "milstein"])
def test_fused_posterior_equals_separate_networks(hidden, grid, dt, solver):
    torch.manual_seed(0)
    config = LatentSDEConfig(latent_dim=Z, context_dim=5, encoder_hidden=8,
                             drift_hidden=hidden, diffusion_hidden=4, emission_hidden=(8,),
                             dt=dt, solver=solver)
    model = LatentSDE(config, D).double().train()
    b = batch(shared=grid == "shared", ragged=grid == "ragged")
    assert isinstance(model.posterior_sde(torch.arange(3.0, dtype=torch.float64),
                                          torch.zeros(1, 3, 5, dtype=torch.float64)),
                      FusedPosterior)
    loss, grads = elbo_and_grads(model, b, fused=True)
    loss0, grads0 = elbo_and_grads(model, b, fused=False)
    assert torch.isfinite(loss) and abs(float(loss - loss0)) < 1e-12 * max(1.0, abs(float(loss0)))
    assert grads.keys() == grads0.keys()
    for name, g in grads.items():
        torch.testing.assert_close(g, grads0[name], rtol=1e-11, atol=1e-12, msg=name)
    # the importance weights read the fused posterior through GirsanovLogRatio
    torch.manual_seed(7)
    w = model.log_weights(b, 3)
    model.posterior_sde = separate(model)
    torch.manual_seed(7)
    w0 = model.log_weights(b, 3)
    del model.posterior_sde
    torch.testing.assert_close(w, w0, rtol=1e-12, atol=1e-10)


def test_adjoint_and_checkpoint_keep_the_separate_networks():
    for gradients in ("adjoint", "checkpoint"):
        config = LatentSDEConfig(latent_dim=Z, gradients=gradients)
        model = LatentSDE(config, D)
        sde = model.posterior_sde(torch.arange(3.0), torch.zeros(1, 3, config.context_dim))
        assert type(sde) is GirsanovKL


def test_interval_rows_reads_the_interval_ahead_and_sends_gradients_back_once():
    times = torch.tensor([0.0, 1.0, 2.5, 4.0], dtype=torch.float64)
    table = torch.randn(2, 4, 3, dtype=torch.float64, requires_grad=True)
    rows, ref = interval_rows(times, table), interval_context(times, table)
    for t in (0.0, 0.5, 1.0, 2.0, 2.5, 3.9, 4.0, 5.0):
        tt = torch.tensor(t, dtype=torch.float64)
        assert torch.equal(rows(tt), ref(tt))
    # one read on each interval: the gradient reaches each read row exactly once
    out = sum((i + 1) * rows(times[i]).sum() for i in range(3))
    out.backward()
    expected = torch.zeros(2, 4, 3, dtype=torch.float64)
    for i in range(3):
        expected[:, i + 1] += i + 1
    assert torch.equal(table.grad, expected)


def test_interval_rows_on_per_row_grids_same_or_different_intervals():
    times = torch.tensor([[0.0, 1.0, 2.0, 3.0], [0.0, 0.5, 2.5, 2.6]], dtype=torch.float64)
    table = torch.randn(2, 4, 3, dtype=torch.float64, requires_grad=True)
    rows, ref = interval_rows(times, table), interval_context(times, table)
    reads = [times[:, i:i + 1] for i in range(3)]                  # every row on interval i
    reads += [torch.tensor([[0.2], [0.7]], dtype=torch.float64),   # intervals 0 and 1
              torch.tensor([[2.9], [9.0]], dtype=torch.float64)]   # 2 and past the end
    out = 0.0
    for j, t in enumerate(reads):
        assert torch.equal(rows(t), ref(t))
        out = out + (j + 1) * rows(t).sum()
    out.backward()
    expected = torch.zeros(2, 4, 3, dtype=torch.float64)
    for i in range(3):
        expected[:, i + 1] += i + 1
    expected[0, 1] += 4
    expected[1, 2] += 4
    expected[0, 3] += 5
    expected[1, 3] += 5
    assert torch.equal(table.grad, expected)
